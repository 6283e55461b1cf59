import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SoundscapeGenerationError } from '@soundqueue/shared/errors';
import { loopGraph, SAMPLE_RATE, type SynthLayer } from '../audio/backgrounds';
import { FfmpegError, parseEbur128Summary, probeAudio, runFfmpeg } from '../ffmpeg';
import type { SoundscapeProvider, SoundscapeRequest, SoundscapeResult } from './types';

// Soundscapes with no key and no network: the scene's ambience words (and setting and mood
// words in its prompt) pick layers from the table below, each synthesized by ffmpeg, plus a
// soft chord whose colour follows the mood. The result is one seamless loop (see
// audio/backgrounds.ts), so the reader can repeat it for as long as the scene stays open.

type AmbienceLayer = 'rain' | 'ocean' | 'wind' | 'fire' | 'forest' | 'city' | 'night' | 'thunder' | 'river' | 'cave' | 'crowd' | 'room';
type Pad = 'pad_calm' | 'pad_bright' | 'pad_sad' | 'pad_dark' | 'pad_mystery';
export type LayerName = AmbienceLayer | Pad;

interface LayerEntry {
  /** Words that call for this layer (a plural matches its singular). */
  words: readonly string[];
  sound: readonly SynthLayer[];
  /** Loudness relative to the other chosen layers, in LU: thunder and the pad sit back. */
  levelLu: number;
}

const AMBIENCE: Record<AmbienceLayer, LayerEntry> = {
  rain: {
    words: ['rain', 'rainy', 'raining', 'rainfall', 'drizzle', 'downpour', 'shower', 'monsoon', 'storm', 'stormy', 'wet', 'umbrella'],
    levelLu: 0,
    sound: [
      { kind: 'noise', color: 'white', levelDb: -6, highpassHz: 1000, lowpassHz: 9000, swell: [{ periodSeconds: 7, depthDb: 2 }] },
      { kind: 'noise', color: 'pink', levelDb: -10, highpassHz: 300, lowpassHz: 2500 },
      { kind: 'crackle', perSecond: 120, levelDb: -2, highpassHz: 2000, lowpassHz: 8000 },
    ],
  },
  ocean: {
    words: ['ocean', 'sea', 'wave', 'surf', 'beach', 'shore', 'coast', 'coastal', 'tide', 'harbor', 'harbour', 'ship', 'sail', 'sailing', 'island', 'seaside', 'bay'],
    levelLu: 0,
    sound: [
      { kind: 'noise', color: 'brown', levelDb: 0, lowpassHz: 500, swell: [{ periodSeconds: 10, depthDb: 12 }, { periodSeconds: 15, depthDb: 4 }] },
      { kind: 'noise', color: 'pink', levelDb: -12, highpassHz: 900, lowpassHz: 5000, swell: [{ periodSeconds: 10, depthDb: 18 }] },
    ],
  },
  wind: {
    words: ['wind', 'windy', 'breeze', 'gust', 'gale', 'blizzard', 'storm', 'stormy', 'howling', 'mountain', 'cliff', 'moor', 'desert', 'tundra', 'snow'],
    levelLu: -2,
    sound: [
      {
        kind: 'noise', color: 'pink', levelDb: 0, highpassHz: 200, lowpassHz: 1200,
        swell: [{ periodSeconds: 11, depthDb: 10 }, { periodSeconds: 4.7, depthDb: 5 }, { periodSeconds: 17, depthDb: 6 }],
      },
    ],
  },
  fire: {
    words: ['fire', 'fireplace', 'hearth', 'campfire', 'bonfire', 'crackle', 'crackling', 'flame', 'ember', 'torch', 'candle', 'forge'],
    levelLu: 0,
    sound: [
      { kind: 'noise', color: 'brown', levelDb: -8, lowpassHz: 300, swell: [{ periodSeconds: 3.1, depthDb: 3 }] },
      { kind: 'crackle', perSecond: 9, levelDb: 8, highpassHz: 1200, lowpassHz: 6000 },
      { kind: 'crackle', perSecond: 60, levelDb: -2, highpassHz: 3000, lowpassHz: 9000 },
    ],
  },
  forest: {
    words: ['forest', 'wood', 'woods', 'woodland', 'bird', 'birdsong', 'jungle', 'tree', 'meadow', 'garden', 'grove', 'park', 'glade', 'orchard', 'spring', 'morning', 'dawn'],
    levelLu: -1,
    sound: [
      { kind: 'chirps', carrierHz: 3200, sweepHz: 900, sweepRateHz: 9, levelDb: -4, pulses: [{ rateHz: 7, sharpness: 6 }, { rateHz: 0.37, sharpness: 12, phase: 0.2 }] },
      { kind: 'chirps', carrierHz: 4400, sweepHz: 600, sweepRateHz: 14, levelDb: -8, pulses: [{ rateHz: 11, sharpness: 4 }, { rateHz: 0.23, sharpness: 16, phase: 0.6 }] },
      { kind: 'noise', color: 'pink', levelDb: -20, highpassHz: 2000, lowpassHz: 8000, swell: [{ periodSeconds: 6, depthDb: 6 }] },
    ],
  },
  city: {
    words: ['city', 'traffic', 'street', 'town', 'urban', 'car', 'downtown', 'highway', 'subway', 'station', 'office', 'apartment', 'alley', 'road'],
    levelLu: 0,
    sound: [
      { kind: 'noise', color: 'brown', levelDb: 0, lowpassHz: 250, swell: [{ periodSeconds: 13, depthDb: 4 }] },
      { kind: 'noise', color: 'pink', levelDb: -14, highpassHz: 200, lowpassHz: 1500, swell: [{ periodSeconds: 9, depthDb: 8 }, { periodSeconds: 21, depthDb: 6 }] },
      { kind: 'tones', frequenciesHz: [60, 120], levelDb: -18 },
    ],
  },
  night: {
    words: ['night', 'nighttime', 'midnight', 'insect', 'cricket', 'cicada', 'frog', 'dusk', 'twilight', 'swamp', 'marsh'],
    levelLu: -3,
    sound: [
      { kind: 'chirps', carrierHz: 4700, sweepHz: 50, sweepRateHz: 2, levelDb: 0, pulses: [{ rateHz: 32, sharpness: 2 }, { rateHz: 2.3, sharpness: 6 }] },
      { kind: 'chirps', carrierHz: 5200, sweepHz: 40, sweepRateHz: 3, levelDb: -4, pulses: [{ rateHz: 28, sharpness: 2 }, { rateHz: 1.7, sharpness: 8, phase: 0.4 }] },
      { kind: 'noise', color: 'brown', levelDb: -12, lowpassHz: 400 },
    ],
  },
  thunder: {
    words: ['thunder', 'thunderstorm', 'storm', 'stormy', 'lightning', 'tempest', 'thunderclap'],
    levelLu: -1,
    sound: [
      { kind: 'noise', color: 'brown', levelDb: 0, lowpassHz: 180, bursts: { periodSeconds: 23, decaySeconds: 4, depthDb: 24, phase: 0.3 } },
      { kind: 'noise', color: 'brown', levelDb: -6, lowpassHz: 700, bursts: { periodSeconds: 23, decaySeconds: 1.2, depthDb: 30, phase: 0.3 } },
    ],
  },
  river: {
    words: ['river', 'stream', 'brook', 'creek', 'waterfall', 'fountain', 'babbling', 'rapids', 'canal'],
    levelLu: 0,
    sound: [
      { kind: 'noise', color: 'pink', levelDb: 0, highpassHz: 300, lowpassHz: 4000, swell: [{ periodSeconds: 0.9, depthDb: 2 }, { periodSeconds: 1.7, depthDb: 2 }, { periodSeconds: 3.3, depthDb: 3 }] },
      { kind: 'noise', color: 'white', levelDb: -16, highpassHz: 2500, lowpassHz: 9000, swell: [{ periodSeconds: 0.6, depthDb: 3 }] },
    ],
  },
  cave: {
    words: ['cave', 'cavern', 'drip', 'dripping', 'dungeon', 'grotto', 'tunnel', 'mine', 'cellar', 'crypt', 'underground', 'catacomb'],
    levelLu: -2,
    sound: [
      { kind: 'drips', pitchesHz: [1180, 1560, 940], periodsSeconds: [2.3, 3.7, 5.3], decayPerSecond: 18, levelDb: 0, echo: true },
      { kind: 'noise', color: 'brown', levelDb: -10, lowpassHz: 300 },
    ],
  },
  crowd: {
    words: ['crowd', 'tavern', 'inn', 'pub', 'murmur', 'chatter', 'market', 'bazaar', 'feast', 'hall', 'party', 'bar', 'restaurant', 'cafe', 'banquet', 'court', 'audience'],
    levelLu: -1,
    sound: [
      {
        kind: 'noise', color: 'pink', levelDb: 0, highpassHz: 300, lowpassHz: 2000,
        swell: [{ periodSeconds: 0.31, depthDb: 4 }, { periodSeconds: 0.53, depthDb: 3 }, { periodSeconds: 0.19, depthDb: 3 }, { periodSeconds: 7, depthDb: 3 }],
      },
      { kind: 'noise', color: 'brown', levelDb: -8, lowpassHz: 400 },
    ],
  },
  // Nothing recognised: the hush of a quiet room, so the reader still hears a space.
  room: {
    words: [],
    levelLu: 0,
    sound: [
      { kind: 'noise', color: 'brown', levelDb: 0, lowpassHz: 800 },
      { kind: 'noise', color: 'pink', levelDb: -18, highpassHz: 200, lowpassHz: 3000 },
    ],
  },
};

const PAD_LEVEL_LU = -12;
const pad = (frequenciesHz: number[], periodSeconds: number, depthDb: number): LayerEntry => ({
  words: [],
  levelLu: PAD_LEVEL_LU,
  sound: [{ kind: 'tones', frequenciesHz, levelDb: 0, swell: [{ periodSeconds, depthDb }] }],
});

const PADS: Record<Pad, LayerEntry & { moods: readonly string[] }> = {
  // C major, open.
  pad_calm: { ...pad([130.81, 196, 261.63, 329.63], 12, 4), moods: [] },
  // C major, an octave up, breathing faster.
  pad_bright: {
    ...pad([261.63, 329.63, 392, 523.25], 6, 3),
    moods: ['joy', 'joyful', 'happy', 'cheerful', 'triumphant', 'bright', 'festive', 'exciting', 'excited', 'adventurous', 'playful', 'lively', 'hopeful', 'celebration', 'victorious'],
  },
  // A minor.
  pad_sad: {
    ...pad([110, 130.81, 164.81, 220], 14, 4),
    moods: ['sad', 'melancholy', 'melancholic', 'somber', 'sombre', 'grief', 'grieving', 'lonely', 'wistful', 'mournful', 'sorrow', 'tragic', 'nostalgic', 'bittersweet'],
  },
  // Low and clashing: a fifth with a semitone rubbing against it.
  pad_dark: {
    ...pad([65.41, 98, 103.83, 155.56], 17, 6),
    moods: ['tense', 'tension', 'ominous', 'dark', 'eerie', 'scary', 'dread', 'menacing', 'suspense', 'suspenseful', 'fear', 'fearful', 'horror', 'sinister', 'danger', 'dangerous', 'threatening', 'creepy', 'anxious', 'foreboding', 'grim'],
  },
  // Suspended, unresolved.
  pad_mystery: {
    ...pad([146.83, 220, 329.63, 415.3], 10, 5),
    moods: ['mysterious', 'mystery', 'magical', 'magic', 'dreamy', 'wonder', 'mystical', 'enchanted', 'otherworldly', 'strange', 'curious', 'ethereal', 'haunting'],
  },
};

const MAX_AMBIENCE_LAYERS = 4;

/** The words of a text, each with its singular too ("waves" also reads as "wave"). */
function words(text: string): string[] {
  return (text.toLowerCase().match(/[a-z]+/g) ?? []).flatMap((w) => (w.length > 3 && w.endsWith('s') && !w.endsWith('ss') ? [w, w.slice(0, -1)] : [w]));
}

function layersMatching(text: string): AmbienceLayer[] {
  const found: AmbienceLayer[] = [];
  for (const word of words(text)) {
    for (const [name, entry] of Object.entries(AMBIENCE) as [AmbienceLayer, LayerEntry][]) {
      if (entry.words.includes(word) && !found.includes(name)) found.push(name);
    }
  }
  return found;
}

/**
 * The layers a scene gets: those its ambience words call for first (in their order), then
 * those its prompt's setting words call for, at most four; a quiet room when nothing
 * matched; and always one pad, coloured by the mood (and the prompt), calm by default.
 */
export function layersFor(ambience: string[], prompt: string, mood = ''): LayerName[] {
  const chosen: AmbienceLayer[] = [];
  for (const name of [...layersMatching(ambience.join(' ')), ...layersMatching(prompt)]) {
    if (!chosen.includes(name) && chosen.length < MAX_AMBIENCE_LAYERS) chosen.push(name);
  }
  if (chosen.length === 0) chosen.push('room');
  const moodWords = new Set(words(`${mood} ${prompt}`));
  const padName = (Object.keys(PADS) as Pad[]).find((p) => PADS[p].moods.some((m) => moodWords.has(m))) ?? 'pad_calm';
  return [...chosen, padName];
}

function entry(name: LayerName): LayerEntry {
  return name.startsWith('pad_') ? PADS[name as Pad] : AMBIENCE[name as AmbienceLayer];
}

const layerLoudness = new Map<string, Promise<number>>();

/**
 * A layer's loudness at unity gain, so the table's levels stay relative whatever the raw
 * generators put out. Measured once per process and length (rates are snapped to the loop's
 * length, so an intermittent layer such as birdsong measures differently at 20 s and 60 s).
 * The measurement is shared by every job that needs it at that moment, so it runs without any
 * one job's signal (a job whose claim was lost would otherwise kill it under the others, each
 * losing an attempt); a caller's signal ends only that caller's wait.
 */
function measureLayer(name: LayerName, seconds: number, signal?: AbortSignal): Promise<number> {
  const key = `${name}/${seconds}`;
  let cached = layerLoudness.get(key);
  if (!cached) {
    cached = runFfmpeg([
      '-nostats', '-filter_complex',
      `${loopGraph(entry(name).sound, 'm', { loopSeconds: seconds, channels: 2 })};[m]ebur128=framelog=verbose[o]`,
      '-map', '[o]', '-f', 'null', '-',
    ]).then(({ stderr }) => parseEbur128Summary(stderr).integratedLufs);
    cached.catch(() => layerLoudness.delete(key));
    layerLoudness.set(key, cached);
  }
  return signal ? untilAborted(cached, signal) : cached;
}

/** `promise`, or its signal's reason as soon as the signal aborts; the work goes on for others. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Soundscapes sit under reading, not over it. */
const TARGET_LUFS = -20;
// Thunder and crackle are impulsive: a sample-peak ceiling low enough that their true peaks,
// after MP3, stay under -1.5 dBTP like every other file this service makes.
const PEAK_CEILING_DB = -3;

const MAX_SECONDS = 600;

export function createLocalSoundscapeProvider(): SoundscapeProvider {
  return {
    name: 'local',
    async generate(request: SoundscapeRequest, signal?: AbortSignal): Promise<SoundscapeResult> {
      const seconds = request.durationSeconds > 0 ? Math.min(request.durationSeconds, MAX_SECONDS) : 60;
      const names = layersFor(request.ambience, request.prompt, request.mood);
      const scratch = await mkdtemp(join(tmpdir(), 'sq-soundscape-'));
      try {
        const loudness = await Promise.all(names.map((name) => measureLayer(name, seconds, signal)));
        // Layers are uncorrelated, so their energies add: set each at its relative level and
        // move them all together so the sum lands on the target.
        const relative = names.map((name) => entry(name).levelLu);
        const total = 10 * Math.log10(relative.reduce((sum, lu) => sum + 10 ** (lu / 10), 0));
        const layers: SynthLayer[] = names.flatMap((name, i) => {
          const gain = TARGET_LUFS - total + relative[i]! - loudness[i]!;
          return entry(name).sound.map((layer) => ({ ...layer, levelDb: layer.levelDb + gain }));
        });
        // Seeded by the prompt: two rainy scenes get different rain, and a retry the same file.
        const seed = createHash('sha256').update(request.prompt).digest().readUInt32BE(0) % 1_000_000;
        const graph = loopGraph(layers, 'scape', { loopSeconds: seconds, channels: 2, seed: seed + 1 });
        const out = join(scratch, 'soundscape.mp3');
        await runFfmpeg(
          [
            '-v', 'error', '-nostats',
            '-filter_complex', `${graph};[scape]alimiter=limit=${10 ** (PEAK_CEILING_DB / 20)}:level=0:latency=1[out]`,
            '-map', '[out]', '-ar', String(SAMPLE_RATE), '-c:a', 'libmp3lame', '-q:a', '4', '-y', out,
          ],
          { signal },
        );
        const info = await probeAudio(out, { signal });
        if (info.channels !== 2 || info.sampleRateHz !== SAMPLE_RATE || Math.abs(info.durationMs - seconds * 1000) > 100) {
          throw new SoundscapeGenerationError(`the synthesized soundscape came out wrong: ${info.channels} ch, ${info.sampleRateHz} Hz, ${info.durationMs} ms`, { retryable: false });
        }
        return { audio: await readFile(out), format: 'mp3', usage: { seconds }, costUsd: 0 };
      } catch (error) {
        if (error instanceof SoundscapeGenerationError) throw error;
        const detail = error instanceof FfmpegError ? `${error.message}\n${error.stderrTail}` : String(error);
        // ffmpeg crashing or being killed: another attempt may succeed.
        throw new SoundscapeGenerationError(`local soundscape synthesis failed: ${detail}`, { retryable: true, cause: error });
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
    },
  };
}
