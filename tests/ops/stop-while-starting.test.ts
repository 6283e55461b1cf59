import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { freePort, killAll, spawnAllInOne, spawnWorker, type ServiceProcess } from '../helpers/processes';
import { waitFor } from '../helpers/wait';

// A worker (or `npm start`'s all-in-one process) told to stop before it has started: a deploy rolled back, or an orchestrator
// giving up on a pod that waits for Redis. Redis here is a port nobody listens on, so the
// start waits for it for ever (a worker cannot take jobs without it; the API, by contrast,
// listens and answers /readyz 503). SIGTERM must still end the process at once and cleanly
// (exit 0, saying why), not by the signal's default action (no exit code, no log line).
let env: TestEnv;
const processes: ServiceProcess[] = [];

beforeAll(async () => {
  env = await createTestEnv();
});
afterAll(async () => {
  await killAll(processes);
  await env?.cleanup();
});

describe('SIGTERM while a worker waits for Redis at start', () => {
  it('exits 0 at once and says it stopped before taking any job', async () => {
    const redisPort = await freePort();
    const child = spawnWorker({ ...env.env, REDIS_URL: `redis://127.0.0.1:${redisPort}` });
    processes.push(child);
    // Migrated and connecting: it said Redis is unreachable and is retrying.
    await waitFor(() => child.count('redis unreachable; reconnecting') > 0 || !child.alive(), { timeoutMs: 30_000 });
    expect(child.alive()).toBe(true);
    const ended = await child.kill('SIGTERM');
    expect(ended).toEqual({ code: 0, signal: null });
    expect(child.count('worker started')).toBe(0);
    expect(child.count('stopped before the workers started; no job was taken')).toBe(1);
    expect(child.errors()).toEqual([]);
  });
});

describe("SIGTERM or Ctrl-C while `npm start`'s process waits for Redis at start", () => {
  it('exits 0 at once and says it stopped before taking any job', async () => {
    const redisPort = await freePort();
    const child = spawnAllInOne({ ...env.env, PORT: String(await freePort()), REDIS_URL: `redis://127.0.0.1:${redisPort}` });
    processes.push(child);
    await waitFor(() => child.count('redis unreachable; reconnecting') > 0 || !child.alive(), { timeoutMs: 30_000 });
    expect(child.alive()).toBe(true);
    const ended = await child.kill('SIGINT');
    expect(ended).toEqual({ code: 0, signal: null });
    expect(child.count('soundqueue started')).toBe(0);
    expect(child.count('stopped before the workers started; no job was taken')).toBe(1);
  });

  it('once started, finishes and exits 0 on SIGTERM', async () => {
    const child = spawnAllInOne({ ...env.env, PORT: String(await freePort()) });
    processes.push(child);
    await child.ready;
    const ended = await child.kill('SIGTERM');
    expect(ended).toEqual({ code: 0, signal: null });
    expect(child.count('stopped')).toBe(1);
    expect(child.errors()).toEqual([]);
  });
});
