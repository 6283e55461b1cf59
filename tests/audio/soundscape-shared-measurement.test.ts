import { readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { createLocalSoundscapeProvider } from '../../apps/worker/src/soundscape/local';

// The local soundscape provider measures each layer's loudness once per process and length,
// and every job that needs a layer while it is measured waits for that one measurement. A job
// whose signal aborts (its claim was lost: processors/soundscape.ts) must end only its own
// wait: killing the shared ffmpeg run failed every other job waiting on it, each losing an
// attempt. This file runs in its own process, so no layer is measured before the test.

/** ffmpeg children of this process measuring loudness (the layer measurements) right now. */
async function measurementsRunning(): Promise<number> {
  let count = 0;
  for (const pid of (await readdir('/proc')).filter((name) => /^\d+$/.test(name))) {
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) continue;
      if ((await readFile(`/proc/${pid}/cmdline`, 'utf8')).includes('ebur128')) count += 1;
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return count;
}

const scratchDirs = async () => (await readdir(tmpdir())).filter((name) => name.startsWith('sq-soundscape-')).length;

async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('local soundscape provider, a layer measured for several jobs', () => {
  it('an aborted job ends only its own wait; the job sharing the measurement gets its soundscape', async () => {
    const provider = createLocalSoundscapeProvider();
    // A length no other test measures, long enough that the measurement is still running when
    // the test aborts (checked below, so the test cannot pass by arriving late).
    const request = { prompt: 'rain on a tin roof', ambience: ['rain'], mood: 'calm', durationSeconds: 97 };
    const dirsBefore = await scratchDirs();
    const controller = new AbortController();
    const first = provider.generate(request, controller.signal).then(
      () => 'completed',
      (error: unknown) => error,
    );
    await until(async () => (await measurementsRunning()) > 0, 'the first job to start measuring its layers');
    const second = provider.generate(request);
    // The second job calls for its layers right after making its scratch directory: once the
    // directory is there, it waits on the measurements the first job started.
    await until(async () => (await scratchDirs()) >= dirsBefore + 2, 'the second job to ask for its layers');
    expect(await measurementsRunning(), 'the measurements must still be running when the first job aborts').toBeGreaterThan(0);
    controller.abort(new Error('claim lost'));

    expect(await first).toBeInstanceOf(Error);
    const result = await second;
    expect(result.format).toBe('mp3');
    expect(result.audio.length).toBeGreaterThan(0);
  }, 120_000);
});
