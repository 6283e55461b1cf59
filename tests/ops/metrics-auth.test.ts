import { once } from 'node:events';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Gauge } from 'prom-client';
import { loadConfig } from '@soundqueue/shared/config';
import { metricsRegistry } from '@soundqueue/shared/metrics';
import { createMetricsServer } from '../../apps/worker/src/metrics-server';
import { startTestApi, type TestApi } from '../helpers/app';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// /metrics with METRICS_TOKEN set: the API's (on its public port) and a worker's answer only
// a scrape that carries the token. Before, both answered anyone who asked.
const TOKEN = 'metrics-token-0123456789abcdef0123456789abcdef';

let env: TestEnv;
let guarded: TestApi;
let open: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ METRICS_TOKEN: TOKEN });
  guarded = await startTestApi(env.config);
  open = await startTestApi(loadConfig({ ...env.env, METRICS_TOKEN: '' }));
});
afterAll(async () => {
  await guarded?.close();
  await open?.close();
  await env?.cleanup();
});

const scrape = (url: string, authorization?: string) => fetch(url, { headers: authorization === undefined ? {} : { Authorization: authorization } });

/** What every /metrics endpoint guarded by TOKEN must answer. */
async function expectGuarded(url: string) {
  for (const authorization of [undefined, 'Bearer', `Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}`, TOKEN, `Bearer ${TOKEN} extra`]) {
    const res = await scrape(url, authorization);
    expect(res.status, String(authorization)).toBe(401);
    expect(res.headers.get('www-authenticate'), String(authorization)).toMatch(/^Bearer\b/);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await res.json()).toEqual({ error: { code: 'unauthorized', message: 'metrics require Authorization: Bearer <METRICS_TOKEN>', details: null } });
  }
  // The scheme is case-insensitive; the token is not.
  for (const authorization of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `BEARER  ${TOKEN}`]) {
    const res = await scrape(url, authorization);
    expect(res.status, authorization).toBe(200);
    expect(await res.text()).toContain('soundqueue_process_cpu_seconds_total');
  }
  expect((await scrape(url, `Bearer ${TOKEN.toUpperCase()}`)).status).toBe(401);
}

describe('/metrics with METRICS_TOKEN', () => {
  it('on the API: 401 in the error shape with a Bearer challenge, unless the token is sent', async () => {
    await expectGuarded(`${guarded.url}/metrics`);
    // The token opens /metrics only: it is no API credential.
    expect((await fetch(`${guarded.url}/v1/audio/variants`, { headers: { Authorization: `Bearer ${TOKEN}` } })).status).toBe(401);
  });

  it('on a worker: the same', async () => {
    const server = createMetricsServer(loadConfig({ METRICS_TOKEN: TOKEN }).METRICS_TOKEN).listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      await expectGuarded(`${base}/metrics`);
      expect((await scrape(`${base}/other`, `Bearer ${TOKEN}`)).status).toBe(404);
    } finally {
      server.close();
    }
  });

  it('unset (or empty): both answer without a token, as before', async () => {
    expect((await scrape(`${open.url}/metrics`)).status).toBe(200);
    const server = createMetricsServer(loadConfig({ METRICS_TOKEN: ' ' }).METRICS_TOKEN).listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const res = await scrape(`http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('soundqueue_process_cpu_seconds_total');
    } finally {
      server.close();
    }
  });

  it("a worker's endpoint answers a scrape with a query string, and a collector's failure with a 500", async () => {
    const server = createMetricsServer(undefined).listen(0, '127.0.0.1');
    await once(server, 'listening');
    // A collector that throws, in the registry the worker serves (removed again below).
    const broken = new Gauge({ name: 'soundqueue_test_broken', help: 'throws when collected', registers: [metricsRegistry], collect() { throw new Error('store unreachable'); } });
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const failed = await scrape(`${base}/metrics?format=prometheus`);
      expect(failed.status).toBe(500);
      expect(((await failed.json()) as { error: unknown }).error).toEqual({ code: 'metrics_unavailable', message: 'store unreachable', details: null });
      metricsRegistry.removeSingleMetric('soundqueue_test_broken');
      expect((await scrape(`${base}/metrics?format=prometheus`)).status).toBe(200);
      expect(rejections).toEqual([]);
    } finally {
      metricsRegistry.removeSingleMetric('soundqueue_test_broken');
      process.off('unhandledRejection', onRejection);
      server.close();
    }
  });

  it("a worker's endpoint answers a request target that is no URL with a 404 and keeps running", async () => {
    // Node's HTTP parser lets such targets through (`//[`, `http://[`); new URL() throws on
    // them, and a throw there was an unhandled rejection, which ends the worker process:
    // one request from anyone who reached the port, token or not, stopped its jobs.
    const server = createMetricsServer(TOKEN).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      for (const target of ['//[', 'http://[', 'http://a:b/metrics']) {
        let answer = '';
        const socket = connect(port, '127.0.0.1', () => socket.write(`GET ${target} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n`));
        socket.on('data', (chunk) => (answer += chunk));
        try {
          await waitFor(() => answer.includes('\r\n') || rejections.length > 0, { timeoutMs: 10_000, what: `an answer to ${target}` });
        } finally {
          socket.destroy();
        }
        expect(rejections, target).toEqual([]);
        expect(answer.split('\r\n')[0], target).toBe('HTTP/1.1 404 Not Found');
      }
      expect((await scrape(`http://127.0.0.1:${port}/metrics`, `Bearer ${TOKEN}`)).status).toBe(200);
    } finally {
      process.off('unhandledRejection', onRejection);
      server.close();
    }
  });
});
