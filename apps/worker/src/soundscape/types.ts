// One interface for every soundscape provider. A provider throws SoundscapeGenerationError
// with `retryable`, `status` and `retryAfterSeconds` set; it never retries by itself.

export interface SoundscapeRequest {
  /** A prose prompt built from the scene (setting, time of day, mood, ambience). */
  prompt: string;
  /** Ambience words from the analysis, e.g. ["rain", "wind", "distant thunder"]. */
  ambience: string[];
  mood: string;
  durationSeconds: number;
}

export interface SoundscapeResult {
  audio: Buffer;
  format: 'mp3' | 'wav';
  usage: { seconds: number };
  costUsd: number;
}

export interface SoundscapeProvider {
  readonly name: 'replicate' | 'local';
  generate(request: SoundscapeRequest, signal?: AbortSignal): Promise<SoundscapeResult>;
}
