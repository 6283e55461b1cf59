import { rm } from 'node:fs/promises';
import { MixingError } from '@soundqueue/shared/errors';
import type { Variant } from '@soundqueue/shared/variants';
import { FfmpegError, InvalidAudioError, inspectAudio, parseEbur128Summary, parseIntegratedLoudness, probeAudio, runFfmpeg } from '../ffmpeg';
import { bedGraph, type BedLevels, measureBed, SAMPLE_RATE } from './backgrounds';

// One pass of ffmpeg per track, no loudnorm. loudnorm resamples to 192 kHz and, in one
// pass, rides the gain dynamically; here the gains are computed beforehand instead:
//
//   - the voice's loudness is measured once per rendition (measureVoiceLoudness, cached by
//     the caller) and a bed recipe's once per process (measureBed);
//   - the voice and the bed are uncorrelated, so their energies add: a bed `r` LU under the
//     voice adds 10·log10(1 + 10^(r/10)) LU, and the voice is set that much under the target;
//   - the voice is mono and leaves as identical left and right channels, which R128 counts
//     as +3.01 LU over the mono measurement;
//   - where the bed plays alone (lead-in, tail) R128's gate may count it, pulling the track
//     under target: planMix predicts the gating from the bed's measured 400 ms blocks and
//     lifts every gain by the difference (tenths of an LU on 7 minutes, over 1 LU on 10 s).
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
// On a 7-minute voice this costs about a third of a single-pass `loudnorm` (BENCHMARKS.md,
// benchmark 3: 3.2-3.8x its speed, 130-200x realtime per CPU second depending on the host).

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
  /** Its decoded duration (probeAudio), when cached too: saves probing the file again. */
  voiceDurationMs?: number;
  signal?: AbortSignal;
}

/**
 * Loudness (LUFS) of a voice file as mixTrack will use it: folded to mono and through the
 * voice's peak limiter (see above). Decodes the file once and then runs a few cheap passes
 * over the decoded samples (about 1 s of CPU per 7 minutes of speech in all), so callers
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
  // The decoded voice is kept in memory (16-bit mono at its own rate: 2.9 MB a minute at
  // 24 kHz) for the passes below, not on disk, where a killed worker would leave it behind.
  const { info, log, output: pcm } = await inspectAudio(
    path,
    { filter: `${VOICE_FOLD},ebur128=framelog=verbose`, extraOutput: ['-map', '0:a:0', '-af', VOICE_FOLD, '-f', 's16le', 'pipe:1'] },
    { signal },
  );
  const raw = parseEbur128Summary(log).integratedLufs;
  if (!(raw > SILENT_LUFS)) return { loudness: raw, durationMs: info.durationMs };

  // The limit follows the loudness and the loudness falls with the limit: find the level L
  // whose limiter (at L + VOICE_PEAK_LU) leaves the voice at exactly L. limited(L) - L has
  // a slope between -1 and 0, so a secant search settles in two or three passes.
  const limited = async (level: number) => {
    const gain = MEASURE_AT_LUFS - level;
    const { stderr } = await runFfmpeg(
      [
        '-nostats', '-f', 's16le', '-ar', String(info.sampleRateHz), '-ac', '1', '-i', 'pipe:0',
        '-af', `aformat=sample_fmts=flt,${voicePeakControl(gain, MEASURE_AT_LUFS)},${LOUDNESS_PRECISELY}`, '-f', 'null', '-',
      ],
      { signal, input: pcm },
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
}

export interface MixPlan {
  voiceGainDb: number;
  /** The voice's loudness (mono) after its gain. */
  voiceLevel: number;
  bedGainDb: number;
  /** The final limiter's ceiling (linear), or null when the worst case cannot reach it. */
  limitLinear: number | null;
  totalSeconds: number;
  /** How far every gain sits above the plain arithmetic (gating of the bed alone, corrections). */
  liftDb: number;
}

/** Tracks shorter than this have their loudness checked after mixing (see mixTrack). */
const VERIFY_UNDER_SECONDS = 40;
const VERIFY_TOLERANCE_LU = 0.5;

/** Sample peaks may rise this much past the voice limiter when resampled to 44.1 kHz. */
const RESAMPLE_OVERSHOOT_DB = 1;

/** The gains and length of a mix, from measurements alone. Exported for tests and benchmarks. */
export function planMix(variant: Variant, voice: { loudness: number; durationMs: number }, bed: BedLevels | null, correctionLu = 0): MixPlan {
  const bedShare = variant.background ? 10 * Math.log10(1 + 10 ** (variant.backgroundLevelLu / 10)) : 0;
  const voiceSeconds = voice.durationMs / 1000 / variant.tempo;
  const totalSeconds = (variant.leadInMs + variant.tailMs) / 1000 + voiceSeconds;
  const designBedGain = (level: number) => (bed ? level + variant.backgroundLevelLu - STEREO_FROM_MONO_LU - bed.loudnessLufs : 0);
  // Where the bed plays alone (lead-in, tail), R128 counts it too if it clears the relative
  // gate, which pulls a short track under its target: lift everything by what that costs.
  const designVoiceTarget = variant.loudnessTargetLufs - bedShare;
  const predicted = bed ? predictIntegrated(variant, bed, designBedGain(designVoiceTarget), voiceSeconds, totalSeconds) : variant.loudnessTargetLufs;
  const liftDb = variant.loudnessTargetLufs - predicted + correctionLu;
  const voiceTarget = designVoiceTarget + liftDb;
  const voiceLevel = voiceTarget - STEREO_FROM_MONO_LU;
  const voiceGainDb = voiceLevel - voice.loudness;
  const bedGainDb = designBedGain(voiceTarget);
  // The final limiter would cost about 5 % of the mix; it is left out when even a bed peak
  // landing on a voice peak stays a margin under the ceiling.
  const worstPeak = 10 ** ((voiceLevel + VOICE_PEAK_LU + RESAMPLE_OVERSHOOT_DB) / 20) + (bed ? 10 ** ((bed.samplePeakDb + bedGainDb) / 20) : 0);
  const ceilingDb = variant.truePeakDbtp - LIMITER_MARGIN_DB;
  const limitLinear = 20 * Math.log10(worstPeak) > ceilingDb ? 10 ** (ceilingDb / 20) : null;
  return { voiceGainDb, voiceLevel, bedGainDb, limitLinear, totalSeconds, liftDb };
}

/**
 * Integrated loudness (BS.1770 gating) the mix would have at the design gains: 400 ms blocks
 * every 100 ms, those under the voice at the target, those in the lead-in and tail at the
 * bed's own measured block loudness through the fades.
 */
function predictIntegrated(variant: Variant, bed: BedLevels, bedGainDb: number, voiceSeconds: number, totalSeconds: number): number {
  const leadIn = variant.leadInMs / 1000;
  const fadeIn = variant.fadeInMs / 1000;
  const fadeOut = variant.fadeOutMs / 1000;
  const energies: number[] = [];
  for (let end = 0.4; end <= totalSeconds + 1e-9; end += 0.1) {
    const middle = end - 0.2;
    if (middle >= leadIn && middle < leadIn + voiceSeconds) {
      energies.push(10 ** (variant.loudnessTargetLufs / 10));
      continue;
    }
    const fade = Math.min(1, fadeIn > 0 ? middle / fadeIn : 1, fadeOut > 0 ? (totalSeconds - middle) / fadeOut : 1);
    const block = bed.blockLufs[Math.round(end * 10 - 1) % bed.blockLufs.length]!;
    if (fade > 0) energies.push(10 ** ((block + bedGainDb + STEREO_FROM_MONO_LU + 20 * Math.log10(fade)) / 10));
  }
  const gated = (floor: number) => energies.filter((e) => e > floor);
  const mean = (list: number[]) => list.reduce((a, b) => a + b, 0) / list.length;
  const absolute = gated(10 ** (-70 / 10));
  if (absolute.length === 0) return variant.loudnessTargetLufs;
  return 10 * Math.log10(mean(gated(mean(absolute) / 10)));
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

async function encode(voicePath: string, variant: Variant, plan: MixPlan, outPath: string, signal?: AbortSignal): Promise<void> {
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
}

async function integratedLoudness(path: string, signal?: AbortSignal): Promise<number> {
  try {
    const { stderr } = await runFfmpeg(['-nostats', '-i', path, '-af', LOUDNESS_PRECISELY, '-f', 'null', '-'], { signal });
    return parseIntegratedLoudness(stderr);
  } catch (error) {
    throw new MixingError(`could not measure the mixed track: ${(error as Error).message}`, { retryable: true, cause: error });
  }
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
      // The loudness was measured when the rendition was stored, which decoded and checked
      // the whole file then; its duration is all that is missing, if that.
      const durationMs = input.voiceDurationMs ?? (await probeAudio(voicePath, { decode: false, signal })).durationMs;
      voice = { loudness: input.voiceLoudness, durationMs };
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

  const bed = variant.background ? await measureBed(variant.background) : null;
  let plan = planMix(variant, voice, bed);
  await encode(voicePath, variant, plan, outPath, signal);

  // Loudness is not re-measured on a long track: the gains are arithmetic on measured inputs
  // (tests/audio hold every variant to ±1 LU and the ceiling) and a scan would cost a fifth
  // of the mix. A short one is different, and cheap to check: a few words hold few 400 ms
  // blocks, most of them straddling silence, so its loudness strays from the arithmetic
  // (by 2-3 LU for two words); it is measured and, if off, mixed again with the error
  // taken out (a few times at most: the final limiter is not linear).
  if (plan.totalSeconds < VERIFY_UNDER_SECONDS) {
    let correction = 0;
    for (let pass = 0; pass < 4; pass += 1) {
      const error = variant.loudnessTargetLufs - (await integratedLoudness(outPath, signal));
      if (Math.abs(error) <= VERIFY_TOLERANCE_LU) break;
      correction += error;
      plan = planMix(variant, voice, bed, correction);
      await encode(voicePath, variant, plan, outPath, signal);
    }
  }

  // What is always checked is that the file is the file promised.
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
