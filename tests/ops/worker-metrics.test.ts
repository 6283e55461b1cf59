import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { spawnWorker } from '../helpers/processes';

let env: TestEnv;
beforeAll(async () => {
  env = await createTestEnv();
});
afterAll(async () => {
  await env?.cleanup();
});

describe('a worker process', () => {
  it('serves its own /metrics on WORKER_METRICS_PORT, behind METRICS_TOKEN, and stops cleanly on SIGTERM', async () => {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const token = 'worker-metrics-token-0123456789abcdef';
    const child = spawn(process.execPath, ['--import', 'tsx', 'apps/worker/src/main.ts'], {
      env: { ...process.env, ...env.env, WORKER_METRICS_PORT: String(port), WORKER_QUEUES: 'audio-mix', METRICS_TOKEN: token },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const text = await waitFor(async () => {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { Authorization: `Bearer ${token}` } });
        return res.ok ? res.text() : null;
      }, { timeoutMs: 120_000, intervalMs: 250, what: 'the worker metrics endpoint' });
      const anonymous = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(anonymous.status).toBe(401);
      expect(anonymous.headers.get('www-authenticate')).toMatch(/^Bearer\b/);
      expect(text).toContain('soundqueue_process_cpu_seconds_total');
      expect(text).toContain('soundqueue_job_duration_seconds');
      expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
  });

  it('answers scrapes once it says "worker started", and stops at start, taking no job, when its metrics port is taken', async () => {
    // Taken by someone else: the worker used to log "worker started", take jobs, and then die
    // of the listen error.
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '0.0.0.0', resolve));
    const port = (holder.address() as AddressInfo).port;
    try {
      const worker = spawnWorker({ ...env.env, WORKER_METRICS_PORT: String(port), WORKER_QUEUES: 'audio-mix' });
      await expect(worker.ready).rejects.toThrow(/exited \(1\) before it was ready/);
      expect(worker.count('worker started')).toBe(0);
      expect(worker.stderr.join('')).toMatch(/EADDRINUSE/);
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
    // A free port: listening by the time it says it has started (no wait for the endpoint).
    const free = createServer();
    await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', resolve));
    const freePort = (free.address() as AddressInfo).port;
    await new Promise<void>((resolve) => free.close(() => resolve()));
    const worker = spawnWorker({ ...env.env, WORKER_METRICS_PORT: String(freePort), WORKER_QUEUES: 'audio-mix' });
    try {
      await worker.ready;
      expect((await fetch(`http://127.0.0.1:${freePort}/metrics`)).status).toBe(200);
    } finally {
      await worker.kill();
    }
  });
});
