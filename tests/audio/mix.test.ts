import { randomBytes } from 'node:crypto';
import { watch } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { MixingError } from '@soundqueue/shared/errors';
import { getVariant, variants } from '@soundqueue/shared/variants';
import { measureVoice, measureVoiceLoudness, mixTrack } from '../../apps/worker/src/audio/mix';
import { measureLoudness, probeAudio, runFfmpeg } from '../../apps/worker/src/ffmpeg';
import { createLocalSpeechProvider } from '../../apps/worker/src/speech/local';
import { scratchPerFile, scratchPerTest } from './scratch';

// Every variant mixed from a real (flite) voice with the real ffmpeg, then measured the way a
// listener's player or a loudness checker would: EBU R128 on the finished MP3.

const suite = scratchPerFile();
const dir = scratchPerTest();

const TEXT =
  'Every morning you wake with purpose. You breathe in calm, and you breathe out doubt. ' +
  'The day ahead is yours to shape, one kind choice at a time.';

let voicePath: string;
let voice: { loudnessLufs: number; durationMs: number };

beforeAll(async () => {
  const speech = await createLocalSpeechProvider().synthesize({ text: TEXT, voice: 'echo', model: 'local', instructions: '' });
  voicePath = join(suite(), 'voice.wav');
  await writeFile(voicePath, speech.audio);
  voice = await measureVoice(voicePath);
});

describe('mixTrack', () => {
  it.each(variants.map((v) => [v.id]))('mixes %s on its loudness target and under its peak ceiling', async (id) => {
    const variant = getVariant(id)!;
    const outPath = join(dir(), `${id}.mp3`);
    const result = await mixTrack({ voicePath, variant, outPath, voiceLoudness: voice.loudnessLufs });

    const loudness = await measureLoudness(outPath);
    expect(Math.abs(loudness.integratedLufs - variant.loudnessTargetLufs)).toBeLessThanOrEqual(1);
    expect(loudness.truePeakDbtp).toBeLessThanOrEqual(variant.truePeakDbtp);
    expect(variant.truePeakDbtp).toBeLessThanOrEqual(-1.5);

    const info = await probeAudio(outPath);
    expect(info).toMatchObject({ codec: 'mp3', sampleRateHz: 44100, channels: 2 });
    const expectedMs = voice.durationMs / variant.tempo + variant.leadInMs + variant.tailMs;
    expect(Math.abs(info.durationMs - expectedMs)).toBeLessThan(150);
    expect(Math.abs(result.durationMs - info.durationMs)).toBeLessThan(100);
  });

  it('lands a longer track on target by arithmetic alone (no check pass), sleep and focus', async () => {
    const longVoice = join(dir(), 'long.wav');
    await runFfmpeg(['-v', 'error', '-stream_loop', '5', '-i', voicePath, '-c', 'copy', '-y', longVoice]);
    const measured = await measureVoice(longVoice);
    for (const id of ['sleep', 'focus']) {
      const variant = getVariant(id)!;
      const outPath = join(dir(), `${id}-long.mp3`);
      const { durationMs } = await mixTrack({ voicePath: longVoice, variant, outPath, voiceLoudness: measured.loudnessLufs, voiceDurationMs: measured.durationMs });
      expect(durationMs).toBeGreaterThan(45_000);
      const loudness = await measureLoudness(outPath);
      expect(Math.abs(loudness.integratedLufs - variant.loudnessTargetLufs)).toBeLessThanOrEqual(1);
      expect(loudness.truePeakDbtp).toBeLessThanOrEqual(variant.truePeakDbtp);
    }
  });

  it('puts the bed under the voice, audible in the lead-in, and nothing in voice_only', async () => {
    const sleep = join(dir(), 'sleep.mp3');
    const plain = join(dir(), 'plain.mp3');
    await mixTrack({ voicePath, variant: getVariant('sleep')!, outPath: sleep, voiceLoudness: voice.loudnessLufs });
    await mixTrack({ voicePath, variant: getVariant('voice_only')!, outPath: plain, voiceLoudness: voice.loudnessLufs });
    // A quarter second inside each lead-in (4 s for sleep, 0.3 s for voice_only): before the first word.
    const level = async (path: string, from: number) => {
      const { stderr } = await runFfmpeg(['-nostats', '-ss', String(from), '-t', '0.2', '-i', path, '-af', 'volumedetect', '-f', 'null', '-']);
      const mean = /mean_volume: (-?[\d.]+|-inf) dB/.exec(stderr)?.[1];
      return mean === undefined || mean === '-inf' ? Number.NEGATIVE_INFINITY : Number(mean);
    };
    expect(await level(sleep, 1.5)).toBeGreaterThan(-60);
    expect(await level(plain, 0.05)).toBeLessThan(-80);
  });

  it('measures the voice itself when nothing is cached, to the same result', async () => {
    const variant = getVariant('focus')!;
    const cached = join(dir(), 'cached.mp3');
    const allCached = join(dir(), 'all-cached.mp3');
    const fresh = join(dir(), 'fresh.mp3');
    await mixTrack({ voicePath, variant, outPath: cached, voiceLoudness: await measureVoiceLoudness(voicePath) });
    await mixTrack({ voicePath, variant, outPath: allCached, voiceLoudness: voice.loudnessLufs, voiceDurationMs: (await probeAudio(voicePath)).durationMs });
    await mixTrack({ voicePath, variant, outPath: fresh });
    const [a, b, c] = await Promise.all([measureLoudness(cached), measureLoudness(allCached), measureLoudness(fresh)]);
    expect(Math.abs(a.integratedLufs - c.integratedLufs)).toBeLessThanOrEqual(0.1);
    expect(Math.abs(b.integratedLufs - c.integratedLufs)).toBeLessThanOrEqual(0.1);
  });

  it('mixes an MP3 voice at another sample rate (what OpenAI returns)', async () => {
    const mp3Voice = join(dir(), 'voice.mp3');
    await runFfmpeg(['-v', 'error', '-i', voicePath, '-ar', '24000', '-c:a', 'libmp3lame', '-b:a', '64k', '-y', mp3Voice]);
    const variant = getVariant('energy')!;
    const outPath = join(dir(), 'energy.mp3');
    await mixTrack({ voicePath: mp3Voice, variant, outPath });
    const loudness = await measureLoudness(outPath);
    expect(Math.abs(loudness.integratedLufs - variant.loudnessTargetLufs)).toBeLessThanOrEqual(1);
    expect(loudness.truePeakDbtp).toBeLessThanOrEqual(-1.5);
  });

  describe('rejects a voice that is not usable audio, for good', () => {
    const rejects = async (voiceFile: string, pattern: RegExp) => {
      const error = await mixTrack({ voicePath: voiceFile, variant: getVariant('sleep')!, outPath: join(dir(), 'out.mp3') }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MixingError);
      expect((error as MixingError).retryable).toBe(false);
      expect((error as MixingError).message).toMatch(pattern);
    };

    it('garbage bytes', async () => {
      const path = join(dir(), 'garbage.mp3');
      await writeFile(path, randomBytes(20_000));
      await rejects(path, /unusable/);
    });

    it('a truncated WAV', async () => {
      const bytes = await readFile(voicePath);
      const path = join(dir(), 'cut.wav');
      await writeFile(path, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
      await rejects(path, /truncated|damaged/);
    });

    it('a truncated MP3', async () => {
      const mp3 = join(dir(), 'voice.mp3');
      await runFfmpeg(['-v', 'error', '-i', voicePath, '-c:a', 'libmp3lame', '-b:a', '64k', '-y', mp3]);
      const bytes = await readFile(mp3);
      const path = join(dir(), 'cut.mp3');
      await writeFile(path, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
      await rejects(path, /truncated|damaged/);
    });

    it('silence', async () => {
      const path = join(dir(), 'silence.wav');
      await runFfmpeg(['-v', 'error', '-f', 'lavfi', '-i', 'anullsrc=r=16000:cl=mono', '-t', '3', '-y', path]);
      await rejects(path, /silent/);
    });
  });

  it('fails retryably, and leaves no half-written file, when stopped mid-mix', async () => {
    // Three minutes of voice, so the mix is still running when its output file appears.
    const longVoice = join(dir(), 'long.wav');
    await runFfmpeg(['-v', 'error', '-stream_loop', '19', '-i', voicePath, '-c', 'copy', '-y', longVoice]);
    const outPath = join(dir(), 'aborted.mp3');
    const controller = new AbortController();
    const watcher = watch(dir(), (_event, name) => {
      if (name === 'aborted.mp3') controller.abort();
    });
    try {
      const error = await mixTrack({ voicePath: longVoice, variant: getVariant('meditation')!, outPath, voiceLoudness: voice.loudnessLufs, signal: controller.signal }).catch(
        (e: unknown) => e,
      );
      expect(controller.signal.aborted).toBe(true);
      expect(error).toBeInstanceOf(MixingError);
      expect((error as MixingError).retryable).toBe(true);
      await expect(readFile(outPath)).rejects.toThrow(/ENOENT/);
    } finally {
      watcher.close();
    }
  });
});

describe('the variant catalog', () => {
  it('lets variants that should share a voice rendition share their instructions exactly', () => {
    const instructions = (id: string) => getVariant(id)!.speechInstructions;
    expect(instructions('energy')).toBe(instructions('voice_only'));
    expect(instructions('focus')).toBe(instructions('voice_only'));
    expect(instructions('meditation')).toBe(instructions('sleep'));
    expect(instructions('sleep')).not.toBe(instructions('voice_only'));
  });

  it('keeps fades inside the lead-in and the tail, and every ceiling at -1.5 dBTP or lower', () => {
    for (const v of variants) {
      expect(v.fadeInMs).toBeLessThanOrEqual(v.leadInMs);
      expect(v.fadeOutMs).toBeLessThanOrEqual(v.tailMs);
      expect(v.truePeakDbtp).toBeLessThanOrEqual(-1.5);
      expect(v.tempo).toBeGreaterThanOrEqual(0.5);
    }
    expect(new Set(variants.map((v) => v.id)).size).toBe(variants.length);
    expect(getVariant('sleep')).toMatchObject({ loudnessTargetLufs: -20, tempo: 0.92 });
    expect(getVariant('voice_only')).toMatchObject({ background: null, loudnessTargetLufs: -16 });
    expect(getVariant('nope')).toBeUndefined();
  });
});
