import { copyFile, stat } from 'node:fs/promises';
import type { Mixer } from '../../apps/worker/src/audio/mixer';
import { InvalidAudioError } from '../../apps/worker/src/ffmpeg';

// A pass-through mixer for benchmark 1: the track's "mix" is its voice file copied as is,
// and a new voice's "measurement" is a fixed figure. Everything around it (rows, the
// rendition claim and cache, storage, rollups, progress events, the three-level flow) is
// the worker's real code, which is what the benchmark measures. Never used by the worker.

export function createPassThroughMixer(voice: { durationMs: number; loudnessLufs: number }): Mixer {
  return {
    async measureVoice(path) {
      // Still refuses an empty file, as the real one would, so a broken provider shows.
      if ((await stat(path)).size === 0) throw new InvalidAudioError('the audio decodes to nothing');
      return voice;
    },
    async mixTrack(input) {
      await copyFile(input.voicePath, input.outPath);
      return { durationMs: input.voiceDurationMs ?? voice.durationMs };
    },
  };
}
