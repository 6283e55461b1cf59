import { createHmac, timingSafeEqual } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '@soundqueue/shared/config';
import { jobId, jobOptions, QUEUE, tuningFrom } from '@soundqueue/shared/queues';
import type { ResolveHost } from '@soundqueue/worker';
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

/**
 * A receiver that answers 500 to the first `failures` deliveries, then 200 (or a 302 to
 * `redirectTo`), listening on `host` (127.0.0.1) and `port` (any free one).
 */
async function startReceiver(failures: number, { host = '127.0.0.1', port = 0, redirectTo }: { host?: string; port?: number; redirectTo?: string } = {}) {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      res.statusCode = received.length <= failures ? 500 : redirectTo ? 302 : 200;
      if (redirectTo) res.setHeader('Location', redirectTo);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const bound = (server.address() as AddressInfo).port;
  return { url: `http://${host}:${bound}/hook`, port: bound, received, close: () => new Promise((r) => server.close(r)) };
}

/**
 * A worker of its own that runs only webhook deliveries, one attempt each, resolving host
 * names with `resolveHost`; `deliver` sends one event to `url` and returns the settled row.
 */
async function withDeliveryWorker(overrides: Record<string, string>, resolveHost: ResolveHost | undefined, use: (deliver: (url: string) => Promise<any>) => Promise<void>) {
  const ownEnv = await createTestEnv({ WORKER_QUEUES: 'webhooks', WEBHOOK_ATTEMPTS: '1', ...overrides });
  const ownWorker = await startTestWorker(ownEnv.config, { resolveHost });
  try {
    await use(async (url) => {
      const [endpoint] = await queryRows(ownEnv.databaseUrl, `insert into webhook_endpoints (user_id, url, events, secret) values ('user-a', $1, '["batch.completed"]', 'whsec_x') returning id`, [url]);
      const [delivery] = await queryRows(ownEnv.databaseUrl, `insert into webhook_deliveries (endpoint_id, event_id, event_type, payload) values ($1, 'evt_1', 'batch.completed', '{"id":"evt_1"}') returning id`, [endpoint.id]);
      await ownWorker.ctx.queues.webhooks.add('deliver', { deliveryId: delivery.id }, { ...jobOptions(QUEUE.webhooks, tuningFrom(ownEnv.config)), jobId: jobId.webhook(delivery.id) });
      return waitFor(async () => {
        const [row] = await queryRows(ownEnv.databaseUrl, 'select status, attempts, last_status_code, last_error from webhook_deliveries where id = $1', [delivery.id]);
        return row?.status !== 'pending' ? row : null;
      }, { what: 'the delivery to settle' });
    });
  } finally {
    await ownWorker.close();
    await ownEnv.cleanup();
  }
}

/** A DNS server that rebinds: `first` to the first question, `then` to every later one. */
function rebindingResolver(first: string, then: string) {
  const asked: string[] = [];
  const resolve: ResolveHost = async (host) => {
    asked.push(host);
    return [{ address: asked.length === 1 ? first : then, family: 4 }];
  };
  return { asked, resolve };
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
      // Every attempt, not only the last: three 500s, then the 200.
      const log = deliveries[0].attempt_log as { attempt: number; status_code: number; latency_ms: number; error: string | null; at: string }[];
      expect(log.map((a) => [a.attempt, a.status_code])).toEqual([[1, 500], [2, 500], [3, 500], [4, 200]]);
      expect(log.slice(0, 3).every((a) => typeof a.error === 'string' && a.error.length > 0)).toBe(true);
      expect(log[3]!.error).toBeNull();
      expect(log.every((a) => a.latency_ms >= 0 && !Number.isNaN(Date.parse(a.at)))).toBe(true);

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
      // it to), IPv4-compatible, NAT64 and 6to4 ones; IPv6 site-local and Teredo; and the
      // special IPv4 ranges that are internal in practice.
      const disguised = ['http://[::ffff:127.0.0.1]:6379/', 'http://[::ffff:7f00:1]/x', 'http://[::ffff:169.254.169.254]/latest', 'http://[::ffff:10.0.0.1]/',
        'http://[::127.0.0.1]/', 'http://[64:ff9b::7f00:1]/', 'http://[64:ff9b::10.0.0.1]/', 'http://[::ffff:0:7f00:1]/', 'http://[fec0::1]/', 'http://[feff::1]/',
        'http://[2002:7f00:1::1]/', 'http://[2002:a9fe:a9fe::]/latest', 'http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/',
        'http://192.0.0.170/', 'http://198.18.0.1/', 'http://198.19.255.254/', 'http://[2001:2::1]/'];
      for (const url of disguised) {
        const res = await strict.request('/v1/webhooks', { method: 'POST', json: { url, events: ['batch.completed'] } });
        expect(res.status, url).toBe(400);
        const { error } = await readJson(res);
        expect(error, url).toMatchObject({ code: 'validation_failed', details: [{ path: 'body.url', message: expect.stringMatching(/loopback, private or link-local address .*; refused$/) }] });
        expect(error.message, url).toBe(`body.url: ${error.details[0].message}`);
      }
      expect(await queryRows(env.databaseUrl, 'select count(*)::int as n from webhook_endpoints')).toEqual(before);
      // The same spellings of a public address are fine.
      for (const url of ['http://[::ffff:93.184.216.34]/x', 'http://[64:ff9b::93.184.216.34]/x', 'http://[2002:5db8:d822::1]/x', 'http://198.20.0.1/x']) {
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

  it('list their deliveries newest first with cursor paging', async () => {
    const res = await api.request('/v1/webhooks', { method: 'POST', json: { url: 'http://127.0.0.1:9/paged', events: ['batch.completed'] } });
    const endpoint = await readJson(res);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const [row] = await queryRows(env.databaseUrl, `insert into webhook_deliveries (endpoint_id, event_id, event_type, payload, created_at) values ($1, $2, 'batch.completed', '{}', '2026-03-01 10:00:00.002+00'::timestamptz + $3 * interval '1 microsecond') returning id`, [endpoint.id, `evt_page_${i}`, i * 100]);
      ids.push(row.id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await readJson(await api.request(`/v1/webhooks/${endpoint.id}/deliveries?limit=2${cursor ? `&cursor=${cursor}` : ''}`));
      seen.push(...page.deliveries.map((d: any) => d.id));
      cursor = page.next_cursor;
    } while (cursor && seen.length < 10);
    expect(seen).toEqual([...ids].reverse());
    expect((await readJson(await api.request(`/v1/webhooks/${endpoint.id}/deliveries`))).deliveries[0].attempt_log).toEqual([]);
    for (const bad of ['limit=0', 'limit=101', 'cursor=zzz']) {
      expect((await api.request(`/v1/webhooks/${endpoint.id}/deliveries?${bad}`)).status, bad).toBe(400);
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

  it('retry a delivery whose host name did not resolve (a resolver timing out is not the endpoint refusing)', async () => {
    // First lookup fails as a resolver does when it times out; the second answers an internal
    // address, which is refused for good. Before, the first failure already ended the delivery.
    let asked = 0;
    const flaky: ResolveHost = async () => {
      asked += 1;
      if (asked === 1) throw Object.assign(new Error('getaddrinfo EAI_AGAIN hooks.soundqueue.test'), { code: 'EAI_AGAIN' });
      return [{ address: '127.0.0.1', family: 4 }];
    };
    await withDeliveryWorker({ WEBHOOK_ALLOW_PRIVATE: 'false', WEBHOOK_ATTEMPTS: '3', WEBHOOK_BACKOFF_MS: '50' }, flaky, async (deliver) => {
      const row = await deliver('https://hooks.soundqueue.test/hook');
      expect(asked).toBe(2);
      expect(row).toMatchObject({ status: 'failed', attempts: 2 });
      expect(row.last_error).toMatch(/^url resolves to a loopback/);
    });
  });

  it('connect to the address that was checked, whatever a second resolution says (DNS rebinding)', async () => {
    // The name answers a public address (TEST-NET-3) to the first question and 127.0.0.1 to
    // any later one. The worker must ask once, pass the check, and hand its socket the checked
    // address; Node's sockets report the address they connect to in their 'lookup' event.
    // (Whatever the address answers, if anything, depends on the network: not asserted.)
    const receiver = await startReceiver(0);
    const dns = rebindingResolver('203.0.113.7', '127.0.0.1');
    const connectedTo: string[] = [];
    const onSocket = (message: unknown) => {
      (message as { socket: Socket }).socket.on('lookup', (_e, address, _f, host) => host === 'rebind.soundqueue.test' && connectedTo.push(address));
    };
    diagnostics.subscribe('net.client.socket', onSocket);
    try {
      await withDeliveryWorker({ WEBHOOK_ALLOW_PRIVATE: 'false', WEBHOOK_TIMEOUT_MS: '500' }, dns.resolve, async (deliver) => {
        const row = await deliver(`http://rebind.soundqueue.test:${receiver.port}/hook`);
        expect(row.attempts).toBe(1);
        expect(row.last_error ?? '').not.toMatch(/refused|does not resolve/);
      });
      expect(dns.asked).toEqual(['rebind.soundqueue.test']);
      expect(connectedTo).toEqual(['203.0.113.7']);
      expect(receiver.received).toEqual([]);
    } finally {
      diagnostics.unsubscribe('net.client.socket', onSocket);
      await receiver.close();
    }
  });

  it('deliver signed to the address resolved first, with the name as Host, where private addresses are allowed', async () => {
    // Two receivers on one port: 127.0.0.2 (what the name resolves to first) and 127.0.0.1
    // (what it answers later). Only the first may hear from the worker.
    const resolved = await startReceiver(0, { host: '127.0.0.2' });
    const other = await startReceiver(0, { port: resolved.port });
    const dns = rebindingResolver('127.0.0.2', '127.0.0.1');
    try {
      await withDeliveryWorker({ WEBHOOK_ALLOW_PRIVATE: 'true' }, dns.resolve, async (deliver) => {
        const row = await deliver(`http://hooks.soundqueue.test:${resolved.port}/hook`);
        expect(row).toMatchObject({ status: 'delivered', attempts: 1, last_status_code: 200, last_error: null });
      });
      expect(resolved.received).toHaveLength(1);
      const [got] = resolved.received;
      expect(got!.headers).toMatchObject({ host: `hooks.soundqueue.test:${resolved.port}`, 'soundqueue-event-id': 'evt_1', 'soundqueue-event-type': 'batch.completed', 'soundqueue-delivery-attempt': '1', 'content-type': 'application/json' });
      expect(JSON.parse(got!.body)).toEqual({ id: 'evt_1' });
      expect(verify('whsec_x', String(got!.headers['soundqueue-signature']), got!.body)).toBe(true);
      expect(other.received).toEqual([]);
      expect(dns.asked).toEqual(['hooks.soundqueue.test']);
    } finally {
      await resolved.close();
      await other.close();
    }
  });

  it('do not follow redirects: a 3xx is a failed attempt that says so', async () => {
    const target = await startReceiver(0);
    const redirecting = await startReceiver(0, { redirectTo: `http://127.0.0.1:${target.port}/` });
    try {
      await withDeliveryWorker({ WEBHOOK_ALLOW_PRIVATE: 'true' }, undefined, async (deliver) => {
        const row = await deliver(redirecting.url);
        expect(row).toMatchObject({ status: 'failed', attempts: 1, last_status_code: 302, last_error: `endpoint answered 302 (a redirect to http://127.0.0.1:${target.port}/); redirects are not followed` });
      });
      expect(redirecting.received).toHaveLength(1);
      expect(target.received).toEqual([]);
    } finally {
      await redirecting.close();
      await target.close();
    }
  });
});
