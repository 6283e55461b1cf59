import { writeFile } from 'node:fs/promises';
import { probeAudio, type AudioInfo } from '../ffmpeg';

/**
 * Writes a provider's audio to `path` and probes it. Truncated, garbage or empty audio is
 * never stored as a usable file: `fail` turns the probe's complaint into the step's error.
 */
export async function writeCheckedAudio(path: string, audio: Buffer, fail: (message: string, cause: unknown) => Error): Promise<AudioInfo> {
  await writeFile(path, audio);
  try {
    return await probeAudio(path);
  } catch (error) {
    throw fail(`returned audio that cannot be decoded: ${(error as Error).message}`, error);
  }
}
