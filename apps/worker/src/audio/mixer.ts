import { measureVoice, mixTrack, type MixInput } from './mix';

/**
 * The audio work of a voice track, as one seam: measuring a new voice when its rendition is
 * stored, and mixing a track from it. Processors reach it through the worker context, like
 * the providers, so the orchestration around it can be run and measured without ffmpeg
 * (bench/lib/pass-through-mixer.ts); the worker always uses ffmpegMixer.
 */
export interface Mixer {
  /**
   * Checks that a voice file decodes completely and measures what mixing needs. Throws
   * InvalidAudioError (apps/worker/src/ffmpeg.ts) for damaged, truncated or empty audio.
   */
  measureVoice(path: string, options?: { signal?: AbortSignal }): Promise<{ loudnessLufs: number; durationMs: number }>;
  /** Mixes one track to `outPath` (see mixTrack); throws MixingError. */
  mixTrack(input: MixInput): Promise<{ durationMs: number }>;
}

export const ffmpegMixer: Mixer = { measureVoice, mixTrack };
