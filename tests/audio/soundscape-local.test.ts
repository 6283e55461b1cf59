import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { measureLoudness, probeAudio, runFfmpeg } from '../../apps/worker/src/ffmpeg';
import { createLocalSoundscapeProvider, layersFor } from '../../apps/worker/src/soundscape/local';
import { seamRatios } from '../helpers/audio';
import { decodePcm, scratchPerTest } from './scratch';

const dir = scratchPerTest();
const provider = createLocalSoundscapeProvider();

describe('layersFor', () => {
  it('picks rain and thunder for ["rain", "thunder"], with a pad', () => {
    const layers = layersFor(['rain', 'thunder'], '');
    expect(layers).toContain('rain');
    expect(layers).toContain('thunder');
    expect(layers.filter((l) => l.startsWith('pad_'))).toHaveLength(1);
  });

  it('reads phrases and plurals in the ambience, and setting words in the prompt', () => {
    expect(layersFor(['distant thunder', 'crackling fire'], '')).toEqual(expect.arrayContaining(['thunder', 'fire']));
    expect(layersFor(['waves'], '')).toContain('ocean');
    expect(layersFor([], 'A crowded tavern at the edge of the city, late at night')).toEqual(expect.arrayContaining(['crowd', 'city', 'night']));
    expect(layersFor(['birdsong', 'a babbling brook'], '')).toEqual(['forest', 'river', 'pad_calm']);
  });

  it('puts the ambience first and keeps at most four layers and a pad', () => {
    const layers = layersFor(['cave', 'rain'], 'a storm over the ocean, wind in the trees, a fire, a market crowd');
    expect(layers.slice(0, 2)).toEqual(['cave', 'rain']);
    expect(layers).toHaveLength(5);
  });

  it('falls back to room tone when no word is known', () => {
    expect(layersFor(['zzz'], 'an abstract idea')).toEqual(['room', 'pad_calm']);
  });

  it('colours the pad by the mood', () => {
    expect(layersFor(['rain'], '', 'ominous')).toContain('pad_dark');
    expect(layersFor(['rain'], '', 'joyful')).toContain('pad_bright');
    expect(layersFor(['rain'], '', 'melancholy')).toContain('pad_sad');
    expect(layersFor(['rain'], 'a mysterious glow', '')).toContain('pad_mystery');
    expect(layersFor(['rain'], '', 'peaceful')).toContain('pad_calm');
  });
});

describe('local soundscape', () => {
  it('makes a valid MP3 of the requested length that loops without a click', async () => {
    const result = await provider.generate({ prompt: 'A storm at night', ambience: ['rain', 'thunder'], mood: 'tense', durationSeconds: 12 });
    expect(result).toMatchObject({ format: 'mp3', usage: { seconds: 12 }, costUsd: 0 });
    const path = join(dir(), 'storm.mp3');
    await writeFile(path, result.audio);

    const info = await probeAudio(path);
    expect(info).toMatchObject({ codec: 'mp3', sampleRateHz: 44100, channels: 2 });
    expect(Math.abs(info.durationMs - 12_000)).toBeLessThan(50);

    const pcm = await decodePcm(path, 2);
    expect(pcm.length).toBe(12 * 44100 * 2);
    for (const ratio of seamRatios(pcm, 2)) expect(ratio).toBeLessThan(1.5);

    const loudness = await measureLoudness(path);
    expect(loudness.integratedLufs).toBeGreaterThan(-26);
    expect(loudness.integratedLufs).toBeLessThan(-16);
    expect(loudness.truePeakDbtp).toBeLessThanOrEqual(-1.5);
  });

  it.each([
    [['birds'], 'a forest at dawn', 'calm'],
    [['fire', 'murmur'], 'a tavern', 'joyful'],
    [['dripping water'], 'a cave', 'mysterious'],
    [['ocean waves'], 'a beach', ''],
  ])('loops %j without a click', async (ambience, prompt, mood) => {
    const result = await provider.generate({ prompt, ambience, mood, durationSeconds: 8 });
    const path = join(dir(), 'scape.mp3');
    await writeFile(path, result.audio);
    const pcm = await decodePcm(path, 2);
    expect(pcm.length).toBe(8 * 44100 * 2);
    for (const ratio of seamRatios(pcm, 2)) expect(ratio).toBeLessThan(1.5);
  });

  it('the seam check does catch a loop that was simply cut', async () => {
    const path = join(dir(), 'cut.wav');
    await runFfmpeg(['-v', 'error', '-f', 'lavfi', '-i', 'anoisesrc=c=brown:r=44100:d=8:seed=3', '-af', 'lowpass=f=500', '-y', path]);
    const ratios = seamRatios(await decodePcm(path, 1), 1);
    expect(ratios[0]).toBeGreaterThan(3);
  });
});
