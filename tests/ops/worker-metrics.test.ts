import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

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
});
