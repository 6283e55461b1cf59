import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MixingError } from '@soundqueue/shared/errors';
import type { Variant } from '@soundqueue/shared/variants';
import { FfmpegError, InvalidAudioError, inspectAudio, parseIntegratedLoudness, probeAudio, runFfmpeg } from '../ffmpeg';
import { bedGraph, type BedLevels, measureBed, SAMPLE_RATE } from './backgrounds';

// One pass of ffmpeg per track, no loudnorm. loudnorm resamples to 192 kHz and, in one
// pass, rides the gain dynamically; here the gains are computed beforehand instead:
//
//   - the voice's loudness is measured once per rendition (measureVoiceLoudness, cached by
//     the caller) and a bed recipe's once per process (measureBed);
//   - the voice and the bed are uncorrelated, so their energies add: a bed `r` LU under the
//     voice adds 10·log10(1 + 10^(r/10)) LU, and the voice is set that much under the target;
//   - the voice is mono and leaves as identical left and right channels, which R128 counts
//     as +3.01 LU over the mono measurement.
//
// Peaks. Pushing a peaky voice (flite's peaks sit 22 dB over its loudness) up to -16 LUFS
// puts its peaks over full scale, and a limiter that shaves them also takes loudness away:
// a whole LU for flite, unpredictably from the loudness alone. So the voice's peaks are held
// to VOICE_PEAK_LU over its own loudness by a limiter that is part of the voice's path, and
// "the voice's loudness" is measured through that same limiter (a limiter scales with its
// input, so the measurement holds at any gain). The mix then knows the voice's loudness
// after limiting exactly, and its peaks land at target + VOICE_PEAK_LU. 15 LU is ordinary
// for produced speech and costs a natural TTS voice little (a tighter 13 LU took 5 LU out
// of flite). A second limiter on the sum, a margin under the ceiling because it limits
// sample peaks and not true peaks, is added only when a variant's worst case (a bed peak
// landing on a voice peak) could reach the ceiling: the -16 LUFS variants.
//
// Everything up to the final channel copy runs in mono, and the bed is a 30 s loop repeated,
// which keeps the graph to a small share of the cost; the MP3 encoder is most of the rest.

/** Voice peaks are held this far over the voice's integrated loudness (sample peak vs LUFS). */
const VOICE_PEAK_LU = 15;
/** Sample-peak margin of the final limiter under the variant's true-peak ceiling. */
const LIMITER_MARGIN_DB = 1.5;
const STEREO_FROM_MONO_LU = 10 * Math.log10(2);
const SILENT_LUFS = -69;
/** Level at which measureVoiceLoudness runs its limiter (any level works; alimiter has a range). */
const MEASURE_AT_LUFS = -20;

/** Folds any voice to the mono the mix uses, so the measurement and the mix agree. */
const VOICE_FOLD = 'aformat=sample_fmts=flt:channel_layouts=mono';

const n = (value: number, digits = 4) => Number(value.toFixed(digits)).toString();

/** The voice's gain and peak limiter, for a voice whose limited loudness becomes `loudnessAfter`. */
function voicePeakControl(gainDb: number, loudnessAfter: number): string {
  // alimiter accepts limits from -24 to 0 dBFS.
  const limitDb = Math.min(0, Math.max(-24, loudnessAfter + VOICE_PEAK_LU));
  return `volume=${n(gainDb)}dB,alimiter=limit=${n(10 ** (limitDb / 20), 6)}:attack=5:release=50:level=0:latency=1`;
}

export interface MixInput {
  voicePath: string;
  variant: Variant;
  outPath: string;
  /** measureVoiceLoudness of this voice file, when the caller has it cached. */
  voiceLoudness?: number;
  signal?: AbortSignal;
}

/**
 * Loudness (LUFS) of a voice file as mixTrack will use it: folded to mono and through the
 * voice's peak limiter (see above). Decodes the file once and then runs a few cheap passes
 * over the decoded samples (about 0.7 s of CPU per 7 minutes of speech in all), so callers
 * cache it per rendition. Rejects damaged audio the same way probeAudio does.
 */
export async function measureVoiceLoudness(path: string, options: { signal?: AbortSignal } = {}): Promise<number> {
  return (await analyzeVoice(path, options.signal)).loudness;
}

/** measureVoiceLoudness with the decoded duration, for a caller that would otherwise probe too. */
export async function measureVoice(path: string, options: { signal?: AbortSignal } = {}): Promise<{ loudnessLufs: number; durationMs: number }> {
  const { loudness, durationMs } = await analyzeVoice(path, options.signal);
  return { loudnessLufs: loudness, durationMs };
}

const round3 = (value: number) => Math.round(value * 1000) / 1000;

const LOUDNESS_PRECISELY = 'ebur128=metadata=1:framelog=verbose,ametadata=mode=print:key=lavfi.r128.I';

async function analyzeVoice(path: string, signal?: AbortSignal): Promise<{ loudness: number; durationMs: number }> {
  const scratch = await mkdtemp(join(tmpdir(), 'sq-voice-'));
  try {
    const pcm = join(scratch, 'voice.f32');
    const { info, log } = await inspectAudio(
      path,
      { filter: `${VOICE_FOLD},${LOUDNESS_PRECISELY}`, extraOutput: ['-map', '0:a:0', '-af', VOICE_FOLD, '-f', 'f32le', pcm] },
      { signal },
    );
    const raw = parseIntegratedLoudness(log);
    if (!(raw > SILENT_LUFS)) return { loudness: raw, durationMs: info.durationMs };

    // The limit follows the loudness and the loudness falls with the limit: find the level L
    // whose limiter (at L + VOICE_PEAK_LU) leaves the voice at exactly L. limited(L) - L has
    // a slope between -1 and 0, so a secant search settles in two or three passes.
    const limited = async (level: number) => {
      const gain = MEASURE_AT_LUFS - level;
      const { stderr } = await runFfmpeg(
        [
          '-nostats', '-f', 'f32le', '-ar', String(info.sampleRateHz), '-ac', '1', '-i', pcm,
          '-af', `${voicePeakControl(gain, MEASURE_AT_LUFS)},${LOUDNESS_PRECISELY}`, '-f', 'null', '-',
        ],
        { signal },
      );
      return parseIntegratedLoudness(stderr) - gain;
    };
    let a = raw;
    const la = await limited(a);
    let ga = la - a;
    if (Math.abs(ga) <= 0.05) return { loudness: round3(la), durationMs: info.durationMs };
    // Flite's loudness falls about half as fast as its limit: a first guess at that slope.
    let b = a + 2 * ga;
    let lb = await limited(b);
    for (let step = 0; step < 3 && Math.abs(lb - b) > 0.05; step += 1) {
      const gb = lb - b;
      const slope = (gb - ga) / (b - a);
      const next = slope < -0.02 ? b - gb / slope : lb;
      [a, ga, b] = [b, gb, next];
      lb = await limited(b);
    }
    return { loudness: round3(lb), durationMs: info.durationMs };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

export interface MixPlan {
  voiceGainDb: number;
  /** The voice's loudness (mono) after its gain. */
  voiceLevel: number;
  bedGainDb: number;
  /** The final limiter's ceiling (linear), or null when the worst case cannot reach it. */
  limitLinear: number | null;
  totalSeconds: number;
}

/** Sample peaks may rise this much past the voice limiter when resampled to 44.1 kHz. */
const RESAMPLE_OVERSHOOT_DB = 1;

/** The gains and length of a mix, from measurements alone. Exported for tests and benchmarks. */
export function planMix(variant: Variant, voice: { loudness: number; durationMs: number }, bed: BedLevels | null): MixPlan {
  const bedShare = variant.background ? 10 * Math.log10(1 + 10 ** (variant.backgroundLevelLu / 10)) : 0;
  const voiceTarget = variant.loudnessTargetLufs - bedShare;
  const voiceLevel = voiceTarget - STEREO_FROM_MONO_LU;
  const voiceGainDb = voiceLevel - voice.loudness;
  const bedGainDb = bed ? voiceTarget + variant.backgroundLevelLu - STEREO_FROM_MONO_LU - bed.loudnessLufs : 0;
  const totalSeconds = (variant.leadInMs + variant.tailMs) / 1000 + voice.durationMs / 1000 / variant.tempo;
  // The final limiter would cost about 5 % of the mix; it is left out when even a bed peak
  // landing on a voice peak stays a margin under the ceiling.
  const worstPeak = 10 ** ((voiceLevel + VOICE_PEAK_LU + RESAMPLE_OVERSHOOT_DB) / 20) + (bed ? 10 ** ((bed.samplePeakDb + bedGainDb) / 20) : 0);
  const ceilingDb = variant.truePeakDbtp - LIMITER_MARGIN_DB;
  const limitLinear = 20 * Math.log10(worstPeak) > ceilingDb ? 10 ** (ceilingDb / 20) : null;
  return { voiceGainDb, voiceLevel, bedGainDb, limitLinear, totalSeconds };
}

function mixGraph(variant: Variant, plan: MixPlan): string {
  const voice = [
    VOICE_FOLD,
    voicePeakControl(plan.voiceGainDb, plan.voiceLevel),
    // Tempo at the voice's own (lower) sample rate: the same result for less work than at 44.1 kHz.
    ...(variant.tempo !== 1 ? [`atempo=${n(variant.tempo)}`] : []),
    `aresample=${SAMPLE_RATE}`,
    `adelay=delays=${Math.round(variant.leadInMs)}:all=1`,
    `apad=pad_dur=${n(variant.tailMs / 1000)}`,
  ].join(',');
  const finish = [
    `afade=t=in:d=${n(variant.fadeInMs / 1000)}`,
    `afade=t=out:st=${n(Math.max(0, plan.totalSeconds - variant.fadeOutMs / 1000))}:d=${n(variant.fadeOutMs / 1000)}`,
    ...(plan.limitLinear === null ? [] : [`alimiter=limit=${n(plan.limitLinear, 6)}:attack=5:release=50:level=0:latency=1`]),
    'pan=stereo|c0=c0|c1=c0',
  ].join(',');
  if (!variant.background) return `[0:a]${voice},${finish}[out]`;
  return [
    `[0:a]${voice}[voice]`,
    bedGraph(variant.background, plan.bedGainDb, 'bed'),
    // The voice, padded with the lead-in and the tail, decides the length; the bed loops under it.
    `[voice][bed]amix=inputs=2:normalize=0:duration=first,${finish}[out]`,
  ].join(';');
}

/**
 * Mixes one track: the voice (slowed when the variant says so) over the variant's bed, with
 * lead-in, tail and fades, at the variant's loudness, as a 44.1 kHz stereo MP3 at `outPath`.
 *
 * Throws MixingError: not retryable when the voice file itself is unusable (damaged, empty or
 * silent: the same bytes fail the same way every time; the rendition must be remade),
 * retryable when ffmpeg fails or is killed (a crash, a full disk, a timeout, shutdown).
 */
export async function mixTrack(input: MixInput): Promise<{ durationMs: number }> {
  const { voicePath, variant, outPath, signal } = input;
  let voice: { loudness: number; durationMs: number };
  try {
    if (input.voiceLoudness !== undefined && Number.isFinite(input.voiceLoudness)) {
      // The loudness was measured when the rendition was stored, which decoded the whole
      // file then; the header's duration is enough now.
      const info = await probeAudio(voicePath, { decode: false, signal });
      voice = { loudness: input.voiceLoudness, durationMs: info.durationMs };
    } else {
      voice = await analyzeVoice(voicePath, signal);
    }
  } catch (error) {
    if (error instanceof InvalidAudioError) {
      throw new MixingError(`the voice audio is unusable: ${error.message}`, { retryable: false, cause: error });
    }
    throw new MixingError(`could not read the voice audio: ${(error as Error).message}`, { retryable: true, cause: error });
  }
  if (!(voice.loudness > SILENT_LUFS)) {
    throw new MixingError('the voice audio is silent', { retryable: false });
  }

  const plan = planMix(variant, voice, variant.background ? await measureBed(variant.background) : null);
  try {
    await runFfmpeg(
      [
        '-v', 'error',
        '-nostats',
        '-i', voicePath,
        '-filter_complex', mixGraph(variant, plan),
        '-map', '[out]',
        '-ar', String(SAMPLE_RATE),
        // The encoder is two thirds of the mix. LAME's fastest algorithm (7 and above run
        // alike) at VBR quality 7: about 60 kb/s for speech over a soft bed (plenty for voice;
        // LAME's own advice for speech), 6 % less CPU than quality 4, and unlike 128 kb/s CBR
        // it keeps the loudness (CBR shaved 0.4 LU off flite's bright harmonics).
        '-c:a', 'libmp3lame', '-q:a', '7', '-compression_level', '7',
        '-map_metadata', '-1',
        '-y', outPath,
      ],
      { signal },
    );
  } catch (error) {
    await rm(outPath, { force: true });
    const detail = error instanceof FfmpegError ? `${error.message}\n${error.stderrTail}` : String(error);
    throw new MixingError(`ffmpeg could not mix the track: ${detail}`, { retryable: true, cause: error });
  }

  // Loudness is not re-measured here: a true-peak scan costs about 40 % of the mix itself,
  // and the gains are arithmetic on measured inputs (tests/audio hold every variant to ±1 LU
  // and the true-peak ceiling). What is checked is that the file is the file promised.
  let out;
  try {
    out = await probeAudio(outPath, { decode: false, signal });
  } catch (error) {
    throw new MixingError(`the mixed file is not valid audio: ${(error as Error).message}`, { retryable: true, cause: error });
  }
  const expectedMs = plan.totalSeconds * 1000;
  if (out.codec !== 'mp3' || out.sampleRateHz !== SAMPLE_RATE || out.channels !== 2 || Math.abs(out.durationMs - expectedMs) > 250 + expectedMs * 0.01) {
    throw new MixingError(
      `the mixed file is not what was asked for: ${out.codec} ${out.sampleRateHz} Hz ${out.channels} ch ${out.durationMs} ms, expected mp3 ${SAMPLE_RATE} Hz 2 ch ${Math.round(expectedMs)} ms`,
      { retryable: false },
    );
  }
  return { durationMs: out.durationMs };
}
