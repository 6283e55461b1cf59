import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { runFfmpeg } from '../../apps/worker/src/ffmpeg';

/** A fresh directory under the OS temp dir for each test, removed after it. */
export function scratchPerTest(): () => string {
  let dir: string | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sq-audio-test-'));
  });
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });
  return () => {
    if (!dir) throw new Error('scratch directory used outside a test');
    return dir;
  };
}

/** One directory for a file's shared inputs (made once in beforeAll), removed after the file. */
export function scratchPerFile(): () => string {
  let dir: string | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sq-audio-suite-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return () => {
    if (!dir) throw new Error('suite scratch directory used outside the suite');
    return dir;
  };
}

/** Decodes a file to interleaved 16-bit PCM with the real ffmpeg. */
export async function decodePcm(path: string, channels: 1 | 2): Promise<Int16Array> {
  const { stdout } = await runFfmpeg(['-v', 'error', '-i', path, '-f', 's16le', '-ac', String(channels), 'pipe:1']);
  return new Int16Array(stdout.buffer, stdout.byteOffset, stdout.length / 2);
}
