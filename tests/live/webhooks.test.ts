import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '@soundqueue/shared/config';
import { jobId, jobOptions, QUEUE, tuningFrom } from '@soundqueue/shared/queues';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
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
      const before = await queryRows(env.databaseUrl, 'select count(*)::int as n from webhook_endpoints');
      // IPv6 spellings of internal IPv4 hosts: mapped (dotted, and the hex URL parsing rewrites
      // it to), IPv4-compatible and NAT64 ones; and IPv6 site-local.
      const disguised = ['http://[::ffff:127.0.0.1]:6379/', 'http://[::ffff:7f00:1]/x', 'http://[::ffff:169.254.169.254]/latest', 'http://[::ffff:10.0.0.1]/',
        'http://[::127.0.0.1]/', 'http://[64:ff9b::7f00:1]/', 'http://[64:ff9b::10.0.0.1]/', 'http://[::ffff:0:7f00:1]/', 'http://[fec0::1]/', 'http://[feff::1]/'];
      for (const url of disguised) {
        const res = await strict.request('/v1/webhooks', { method: 'POST', json: { url, events: ['batch.completed'] } });
        expect(res.status, url).toBe(400);
        const { error } = await readJson(res);
        expect(error, url).toMatchObject({ code: 'validation_failed', details: [{ path: 'body.url', message: expect.stringMatching(/loopback, private or link-local address .*; refused$/) }] });
        expect(error.message, url).toBe(`body.url: ${error.details[0].message}`);
      }
      expect(await queryRows(env.databaseUrl, 'select count(*)::int as n from webhook_endpoints')).toEqual(before);
      // The same spellings of a public address are fine.
      for (const url of ['http://[::ffff:93.184.216.34]/x', 'http://[64:ff9b::93.184.216.34]/x']) {
        expect((await strict.request('/v1/webhooks', { method: 'POST', json: { url, events: ['batch.completed'] } })).status, url).toBe(201);
      }
      const badEvent = await strict.request('/v1/webhooks', { method: 'POST', json: { url: 'https://example.com/x', events: ['nope'] } });
      expect(badEvent.status).toBe(400);
      const ftp = await strict.request('/v1/webhooks', { method: 'POST', json: { url: 'ftp://example.com/x', events: ['batch.completed'] } });
      expect(ftp.status).toBe(400);
    } finally {
      await strict.close();
    }
  });

  it('are stored as the URL deliveries go to, and never with port 0', async () => {
    const sent = { ' https://93.184.216.34/a\nb ': 'https://93.184.216.34/ab', 'HTTPS://93.184.216.34:443/Hook?x=1': 'https://93.184.216.34/Hook?x=1', 'https://93.184.216.34/a b': 'https://93.184.216.34/a%20b' };
    for (const [url, normalised] of Object.entries(sent)) {
      const res = await api.request('/v1/webhooks', { method: 'POST', json: { url, events: ['batch.completed'] } });
      expect(res.status, url).toBe(201);
      const endpoint = await readJson(res);
      expect(endpoint.url, url).toBe(normalised);
      expect((await readJson(await api.request(`/v1/webhooks/${endpoint.id}`))).url).toBe(normalised);
      expect(await queryRows(env.databaseUrl, 'select url from webhook_endpoints where id = $1', [endpoint.id])).toEqual([{ url: normalised }]);
    }
    const before = await queryRows(env.databaseUrl, 'select count(*)::int as n from webhook_endpoints');
    for (const url of ['https://93.184.216.34:0/', 'http://93.184.216.34:00/x']) {
      const res = await api.request('/v1/webhooks', { method: 'POST', json: { url, events: ['batch.completed'] } });
      expect(res.status, url).toBe(400);
      expect(await readJson(res), url).toEqual({ error: { code: 'validation_failed', message: 'body.url: url must not use port 0', details: [{ path: 'body.url', message: 'url must not use port 0' }] } });
    }
    expect(await queryRows(env.databaseUrl, 'select count(*)::int as n from webhook_endpoints')).toEqual(before);
  });

  it('refuse at delivery an endpoint whose address is internal, and send it nothing', async () => {
    // Registration refuses these, but DNS can change after it and rows predate fixes: the
    // worker checks again. The endpoint row is written directly, as registration would not.
    // Two attempts: a refusal must not be retried (attempts stays 1), a failed request would be.
    const strictEnv = await createTestEnv({ WEBHOOK_ALLOW_PRIVATE: 'false', WORKER_QUEUES: 'webhooks', WEBHOOK_ATTEMPTS: '2', WEBHOOK_BACKOFF_MS: '100' });
    const strictWorker = await startTestWorker(strictEnv.config);
    const receiver = await startReceiver(0);
    try {
      const port = new URL(receiver.url).port;
      const urls = [`http://[::ffff:127.0.0.1]:${port}/hook`, `http://[::127.0.0.1]:${port}/hook`, `http://[64:ff9b::7f00:1]:${port}/hook`];
      const deliveryIds: string[] = [];
      for (const url of urls) {
        const [endpoint] = await queryRows(strictEnv.databaseUrl, `insert into webhook_endpoints (user_id, url, events, secret) values ('user-a', $1, '["batch.completed"]', 'whsec_x') returning id`, [url]);
        const [delivery] = await queryRows(strictEnv.databaseUrl, `insert into webhook_deliveries (endpoint_id, event_id, event_type, payload) values ($1, 'evt_1', 'batch.completed', '{}') returning id`, [endpoint.id]);
        await strictWorker.ctx.queues.webhooks.add('deliver', { deliveryId: delivery.id }, { ...jobOptions(QUEUE.webhooks, tuningFrom(strictEnv.config)), jobId: jobId.webhook(delivery.id) });
        deliveryIds.push(delivery.id);
      }
      const settled = await waitFor(async () => {
        const rows = await queryRows(strictEnv.databaseUrl, `select url, status, attempts, last_error from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id where d.id = any($1::uuid[])`, [deliveryIds]);
        return rows.length === urls.length && rows.every((r) => r.status !== 'pending') ? rows : null;
      }, { what: 'the deliveries to settle' });
      for (const row of settled) {
        expect(row, row.url).toMatchObject({ status: 'failed', attempts: 1, last_error: expect.stringMatching(/loopback, private or link-local address .*; refused$/) });
      }
      expect(receiver.received).toEqual([]);
    } finally {
      await receiver.close();
      await strictWorker.close();
      await strictEnv.cleanup();
    }
  });
});
