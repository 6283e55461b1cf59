import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '@soundqueue/shared/config';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;

interface Received {
  headers: IncomingMessage['headers'];
  body: string;
}

/** A receiver that answers 500 to the first `failures` deliveries, then 200. */
async function startReceiver(failures: number) {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      res.statusCode = received.length <= failures ? 500 : 200;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, received, close: () => new Promise((r) => server.close(r)) };
}

/** The README's verification recipe, written out as a receiver would. */
function verify(secret: string, signatureHeader: string, rawBody: string): boolean {
  const parts = Object.fromEntries(signatureHeader.split(',').map((kv) => kv.split('=')));
  const expected = createHmac('sha256', secret).update(`${parts.t}.${rawBody}`).digest();
  const given = Buffer.from(parts.v1 ?? '', 'hex');
  const fresh = Math.abs(Date.now() / 1000 - Number(parts.t)) < 300;
  return fresh && given.length === expected.length && timingSafeEqual(given, expected);
}

beforeAll(async () => {
  env = await createTestEnv({ WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_BACKOFF_MS: '100' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

describe('webhooks', () => {
  it('deliver signed events, retrying a failing receiver with the same event id', async () => {
    const receiver = await startReceiver(3);
    try {
      const res = await api.request('/v1/webhooks', { method: 'POST', json: { url: receiver.url, events: ['batch.completed', 'track.failed'] } });
      expect(res.status).toBe(201);
      const endpoint = await readJson(res);
      expect(endpoint.secret).toMatch(/^whsec_/);

      const created = await createBatch(api, { visionId: 'hooks', sections: sampleSections(1, 'Hook'), variants: ['voice_only'], voice: 'alloy' });
      await waitForTerminal(api, created.body.id);
      await waitFor(() => receiver.received.length >= 4, { what: 'four delivery attempts' });

      const ids = new Set(receiver.received.map((r) => r.headers['soundqueue-event-id']));
      expect(ids.size).toBe(1);
      expect(receiver.received.map((r) => r.headers['soundqueue-delivery-attempt'])).toEqual(['1', '2', '3', '4']);
      for (const r of receiver.received) {
        expect(verify(endpoint.secret, String(r.headers['soundqueue-signature']), r.body)).toBe(true);
        expect(verify('whsec_wrong', String(r.headers['soundqueue-signature']), r.body)).toBe(false);
        expect(verify(endpoint.secret, String(r.headers['soundqueue-signature']), r.body.replace('completed', 'failed'))).toBe(false);
      }
      const payload = JSON.parse(receiver.received[0]!.body);
      expect(payload).toMatchObject({ type: 'batch.completed', id: [...ids][0], data: { batch_id: created.body.id, status: 'completed', tracksCompleted: 1 } });

      const deliveries = await waitFor(async () => {
        const d = (await readJson(await api.request(`/v1/webhooks/${endpoint.id}/deliveries`))).deliveries;
        return d[0]?.status === 'delivered' ? d : null;
      });
      expect(deliveries[0]).toMatchObject({ event_type: 'batch.completed', attempts: 4, last_status_code: 200, last_error: null });
      expect(deliveries[0].last_latency_ms).toBeGreaterThanOrEqual(0);

      const listed = await readJson(await api.request('/v1/webhooks'));
      expect(listed.webhooks.map((w: any) => w.id)).toEqual([endpoint.id]);
      expect(listed.webhooks[0].secret).toBeUndefined();
      expect((await api.request(`/v1/webhooks/${endpoint.id}`, { user: 'user-b' })).status).toBe(404);
      expect((await api.request(`/v1/webhooks/${endpoint.id}`, { method: 'DELETE' })).status).toBe(204);
      expect((await api.request(`/v1/webhooks/${endpoint.id}`)).status).toBe(404);
    } finally {
      await receiver.close();
    }
  });

  it('refuse loopback, private and link-local URLs unless allowed', async () => {
    const strict = await startTestApi(loadConfig({ ...env.env, WEBHOOK_ALLOW_PRIVATE: 'false' }));
    try {
      for (const url of ['http://127.0.0.1:9/x', 'http://localhost/x', 'http://10.1.2.3/x', 'http://192.168.1.1/x', 'http://169.254.169.254/latest', 'http://[::1]/x', 'http://172.16.0.1/']) {
        const res = await strict.request('/v1/webhooks', { method: 'POST', json: { url, events: ['batch.completed'] } });
        expect(res.status, url).toBe(400);
        expect((await readJson(res)).error.message).toMatch(/loopback, private or link-local|does not resolve/);
      }
      const badEvent = await strict.request('/v1/webhooks', { method: 'POST', json: { url: 'https://example.com/x', events: ['nope'] } });
      expect(badEvent.status).toBe(400);
      const ftp = await strict.request('/v1/webhooks', { method: 'POST', json: { url: 'ftp://example.com/x', events: ['batch.completed'] } });
      expect(ftp.status).toBe(400);
    } finally {
      await strict.close();
    }
  });
});
