// The variant catalog: what a user picks ("sleep with ocean waves") and everything the mixer
// needs to make it. It is data, listed by the API and read by the worker, so a new variant is
// a new entry here and never a new branch in the mixer.
//
// Variant ids are stored in batch and track rows: renaming one orphans those rows.

/** A slow rise and fall of a layer's level: waves, breathing. Sinusoidal in dB. */
export interface Swell {
  periodSeconds: number;
  /** Distance between the quietest and the loudest moment. */
  depthDb: number;
}

/**
 * One sound in a bed. Levels are gains on the raw generator (noise at full scale, each sine
 * at ffmpeg's 1/8 amplitude) and only matter relative to the other layers: the mixer
 * measures the finished bed and sets it against the voice by `backgroundLevelLu`.
 */
export type BedLayer =
  | {
      kind: 'noise';
      color: 'white' | 'pink' | 'brown';
      levelDb: number;
      highpassHz?: number;
      lowpassHz?: number;
      swell?: readonly Swell[];
    }
  | {
      kind: 'tones';
      frequenciesHz: readonly number[];
      levelDb: number;
      swell?: readonly Swell[];
    };

export interface BackgroundRecipe {
  id: string;
  label: string;
  layers: readonly BedLayer[];
}

export interface Variant {
  id: string;
  name: string;
  description: string;
  /** Null: the voice alone. */
  background: BackgroundRecipe | null;
  /** Loudness of the bed relative to the voice's, in LU; negative keeps it under the words. */
  backgroundLevelLu: number;
  /** Voice speed factor applied by the mixer (1 = as spoken; 0.92 = 8 % slower). */
  tempo: number;
  /** Bed alone before the voice starts, and after it ends. */
  leadInMs: number;
  tailMs: number;
  /** Fades sit inside the lead-in and the tail, so they never cut into a word. */
  fadeInMs: number;
  fadeOutMs: number;
  /** Integrated loudness of the finished track (EBU R128); the mix lands within ±1 LU. */
  loudnessTargetLufs: number;
  /** Ceiling for the finished track's true peak; -1.5 dBTP or lower survives lossy re-encoding. */
  truePeakDbtp: number;
  /**
   * Delivery instructions for the TTS model. Variants that share the exact string share one
   * cached voice rendition (the cache key is text + voice + model + instructions), so keep
   * these two strings shared rather than tuning them per variant.
   */
  speechInstructions: string;
}

const CONVERSATIONAL =
  'Speak in a warm, clear and confident voice at a natural pace, as if talking to one person you believe in. ' +
  'Sound sincere and present, with short pauses between sentences.';

const SOOTHING =
  'Speak slowly and softly in a calm, low, soothing voice, as if guiding someone toward deep rest. ' +
  'Keep an even, gentle tone with long, unhurried pauses between sentences; never sound excited.';

const ocean: BackgroundRecipe = {
  id: 'ocean_waves',
  label: 'Ocean waves',
  layers: [
    // The body of the wave: low rumble that swells and recedes.
    { kind: 'noise', color: 'brown', levelDb: 0, lowpassHz: 500, swell: [{ periodSeconds: 10, depthDb: 12 }, { periodSeconds: 15, depthDb: 4 }] },
    // The wash as it breaks: brighter hiss riding the same swell, deeper.
    { kind: 'noise', color: 'pink', levelDb: -12, highpassHz: 900, lowpassHz: 5000, swell: [{ periodSeconds: 10, depthDb: 18 }] },
  ],
};

const bright: BackgroundRecipe = {
  id: 'bright_pulse',
  label: 'Bright pulse',
  layers: [
    { kind: 'noise', color: 'pink', levelDb: -6, highpassHz: 400, lowpassHz: 9000, swell: [{ periodSeconds: 4, depthDb: 3 }] },
    // A major chord high up, pulsing at half a second: lift without a beat to clash with speech.
    { kind: 'tones', frequenciesHz: [440, 554.37, 659.25, 880], levelDb: 0, swell: [{ periodSeconds: 2, depthDb: 6 }] },
  ],
};

const drone: BackgroundRecipe = {
  id: 'soft_drone',
  label: 'Soft drone',
  layers: [
    // A2, E3, A3, C#4: an open major drone that breathes slowly.
    { kind: 'tones', frequenciesHz: [110, 164.81, 220, 277.18], levelDb: 0, swell: [{ periodSeconds: 12, depthDb: 4 }] },
    { kind: 'noise', color: 'pink', levelDb: -18, lowpassHz: 2500, swell: [{ periodSeconds: 15, depthDb: 4 }] },
  ],
};

const brown: BackgroundRecipe = {
  id: 'brown_noise',
  label: 'Brown noise',
  layers: [{ kind: 'noise', color: 'brown', levelDb: 0, lowpassHz: 1000 }],
};

export const variants = [
  {
    id: 'voice_only',
    name: 'Voice only',
    description: 'The narration alone, clear and even.',
    background: null,
    backgroundLevelLu: 0,
    tempo: 1,
    leadInMs: 300,
    tailMs: 700,
    fadeInMs: 100,
    fadeOutMs: 300,
    loudnessTargetLufs: -16,
    truePeakDbtp: -1.5,
    speechInstructions: CONVERSATIONAL,
  },
  {
    id: 'sleep',
    name: 'Sleep',
    description: 'Slower, softer narration over gentle ocean waves, for falling asleep.',
    background: ocean,
    backgroundLevelLu: -12,
    tempo: 0.92,
    leadInMs: 4000,
    tailMs: 8000,
    fadeInMs: 3000,
    fadeOutMs: 6000,
    loudnessTargetLufs: -20,
    truePeakDbtp: -1.5,
    speechInstructions: SOOTHING,
  },
  {
    id: 'energy',
    name: 'Energy',
    description: 'Upbeat narration over a bright, pulsing bed, for mornings and workouts.',
    background: bright,
    backgroundLevelLu: -16,
    tempo: 1,
    leadInMs: 1500,
    tailMs: 2500,
    fadeInMs: 1000,
    fadeOutMs: 2000,
    loudnessTargetLufs: -16,
    truePeakDbtp: -1.5,
    speechInstructions: CONVERSATIONAL,
  },
  {
    id: 'meditation',
    name: 'Meditation',
    description: 'Unhurried narration over a soft drone and quiet air, for stillness.',
    background: drone,
    backgroundLevelLu: -13,
    tempo: 0.95,
    leadInMs: 5000,
    tailMs: 8000,
    fadeInMs: 4000,
    fadeOutMs: 6000,
    loudnessTargetLufs: -20,
    truePeakDbtp: -1.5,
    speechInstructions: SOOTHING,
  },
  {
    id: 'focus',
    name: 'Focus',
    description: 'Clear narration over soft brown noise that masks the room.',
    background: brown,
    backgroundLevelLu: -15,
    tempo: 1,
    leadInMs: 2000,
    tailMs: 3000,
    fadeInMs: 1500,
    fadeOutMs: 2500,
    loudnessTargetLufs: -16,
    truePeakDbtp: -1.5,
    speechInstructions: CONVERSATIONAL,
  },
] as const satisfies readonly Variant[];

export type VariantId = (typeof variants)[number]['id'];

export const variantIds: readonly VariantId[] = variants.map((v) => v.id);

const byId = new Map<string, Variant>(variants.map((v) => [v.id, v]));

export function getVariant(id: string): Variant | undefined {
  return byId.get(id);
}
