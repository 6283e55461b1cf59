import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { eventLogKey } from '@soundqueue/shared/events';
import { startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { postBook } from '../helpers/books';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

// An enqueue the API answered 503 for (its batch or book recorded as failed) must never land
// in Redis afterwards, whatever the outage looked like: Redis stopped and started again, a
// reconnect to a server that accepts but does not answer, a connection lost with the flow in
// flight, an API started while Redis was away. The API reaches its own redis-server through
// a TCP proxy the test controls. No worker runs, so whatever lands stays where it landed.
//
// "Never" is checked after a positive event, not a sleep: once Redis is back and the API's
// connections are ready, the same API enqueues another batch and Redis acknowledges it. A
// connection sends what it kept from the outage (offline queue, unanswered commands) as it
// becomes ready, before any new command, and BullMQ's adds that waited for a first 'ready'
// run before any later add; so by that acknowledgement a late flow would already be there.
let redis: OwnRedis;
let proxy: TcpProxy;
let env: TestEnv;
let api: TestApi;
let direct: Redis;

beforeAll(async () => {
  redis = await startOwnRedis();
  proxy = await startTcpProxy(redis.url);
  // A short enqueue timeout so each outage is brief (the failure events the API publishes
  // after answering still take its other connection's 5 s command timeout to give up).
  env = await createTestEnv({ REDIS_URL: proxy.url, ENQUEUE_TIMEOUT_MS: '1000', WEBHOOK_ALLOW_PRIVATE: 'true' });
  api = await startTestApi(env.config);
  direct = new Redis(redis.url, { maxRetriesPerRequest: null });
  direct.on('error', () => {});
});
afterAll(async () => {
  await api?.close();
  direct?.disconnect();
  await proxy?.close();
  await env?.cleanup();
  await redis?.stop();
});

const batchBody = (visionId: string) => ({ visionId, sections: sampleSections(2), variants: ['voice_only'], voice: 'alloy' });

/** The ids a flow's job keys are named by (BullMQ keys are `<prefix>:<queue>:<job id>`). */
type Refused = { kind: 'batch' | 'book'; id: string; ids: string[] };

async function refusedBatch(on: TestApi): Promise<Refused> {
  const res = await createBatch(on, batchBody('refused'));
  expect(res.status).toBe(503);
  expect(res.body.error.code).toBe('queue_unavailable');
  const id = res.body.error.details.batchId as string;
  const [batch] = await queryRows(env.databaseUrl, 'select * from audio_generation_batches where id = $1', [id]);
  expect(batch).toMatchObject({ status: 'failed', run: 1, tracks_failed: 2, tracks_pending: 0 });
  expect(batch.error_message).toMatch(/^Could not enqueue the batch's jobs: /);
  expect(res.body.error.message.startsWith(batch.error_message)).toBe(true);
  const tracks = await queryRows(env.databaseUrl, 'select id from audio_tracks where batch_id = $1', [id]);
  return { kind: 'batch', id, ids: [id, ...tracks.map((t) => t.id as string)] };
}

async function refusedBook(on: TestApi): Promise<Refused> {
  const res = await postBook(on, { title: 'Refused', pages: ['a forest', 'the sea'] });
  expect(res.status).toBe(503);
  expect(res.body.error.code).toBe('queue_unavailable');
  const id = res.body.error.details.bookId as string;
  const [book] = await queryRows(env.databaseUrl, 'select * from books where id = $1', [id]);
  expect(book.status).toBe('failed');
  expect(book.run).toBe(1);
  expect(book.processing_errors[0].message).toMatch(/^Could not enqueue the book's jobs: /);
  expect(res.body.error.message.startsWith(book.processing_errors[0].message)).toBe(true);
  return { kind: 'book', id, ids: [id] };
}

/** The ioredis status of the API's flows connection ('ready', 'connect', 'reconnecting', …). */
async function flowsStatus(on: TestApi): Promise<string> {
  // BullMQ hands the client out once it was first ready; until then there is none to ask.
  const notYet = new Promise<null>((resolve) => setTimeout(() => resolve(null), 200));
  const client = await Promise.race([on.ctx.flows.waitUntilReady(), notYet]);
  return client?.status ?? 'never ready yet';
}

/** Both of the API's Redis connections are ready again: /readyz (reads) and the flows' own. */
async function recovered(on: TestApi): Promise<void> {
  await waitFor(async () => (await fetch(`${on.url}/readyz`)).status === 200, { timeoutMs: 30_000, what: '/readyz 200' });
  await waitFor(async () => (await flowsStatus(on)) === 'ready', { timeoutMs: 30_000, what: 'the flows connection ready' });
}

/** After a later batch of the same API is acknowledged, nothing of the refused work is in Redis. */
async function expectNeverLanded(on: TestApi, refused: Refused[]): Promise<void> {
  const next = await createBatch(on, batchBody('after the outage'));
  expect(next.status).toBe(201);
  expect(await direct.exists(`${env.prefix}:audio-batch:batch.${next.body.id}.r1`)).toBe(1);
  // Every key but the event logs, which rightly hold the "failed" events the API published.
  const keys = (await direct.keys(`${env.prefix}:*`)).filter((key) => !key.startsWith(`${env.prefix}:events:`));
  for (const work of refused) {
    expect.soft(keys.filter((key) => work.ids.some((id) => key.includes(id))), `${work.kind} ${work.id} in Redis`).toEqual([]);
    const table = work.kind === 'batch' ? 'audio_generation_batches' : 'books';
    const [row] = await queryRows(env.databaseUrl, `select status, run from ${table} where id = $1`, [work.id]);
    expect(row).toEqual({ status: 'failed', run: 1 });
  }
}

describe('an enqueue the API reported as failed never lands later', () => {
  it('Redis stopped, then started again: neither the batch nor the book appears', async () => {
    await redis.stop();
    const refused = [await refusedBatch(api), await refusedBook(api)];
    await redis.start();
    await recovered(api);
    await expectNeverLanded(api, refused);
  });

  it('reconnecting to a server that accepts but does not answer: refused at once, nothing kept for later', async () => {
    proxy.hold();
    proxy.cut();
    // Reconnected (the proxy accepts) but its handshake is held: not ready, so a command
    // would wait in ioredis's offline queue.
    await waitFor(async () => (await flowsStatus(api)) === 'connect', { what: 'the flows connection reconnected but not ready' });
    const refused = [await refusedBatch(api)];
    proxy.release();
    await recovered(api);
    await expectNeverLanded(api, refused);
  });

  it('the connection lost with the flow in flight: it is not sent again on reconnect', async () => {
    proxy.hold();
    // The connection is ready, so the flow's MULTI/EXEC is written, and held by the proxy
    // until the API gives up on it.
    const refused = [await refusedBatch(api)];
    proxy.cut();
    await waitFor(async () => (await flowsStatus(api)) !== 'ready', { what: 'the flows connection to drop' });
    proxy.release();
    await recovered(api);
    await expectNeverLanded(api, refused);
  });

  it('an API started while Redis was away: the add it gave up on does not carry on once Redis is back', async () => {
    await redis.stop();
    const late = await startTestApi(env.config);
    try {
      const refused = [await refusedBatch(late), await refusedBook(late)];
      await redis.start();
      await recovered(late);
      await expectNeverLanded(late, refused);
    } finally {
      await late.close();
    }
  });
});

/** An API whose warnings and errors the test reads (pino's JSON lines). */
async function apiWithLog(): Promise<{ api: TestApi; logged: (text: string) => string[] }> {
  const lines: string[] = [];
  const logger = pino({ name: 'api', level: 'warn' }, { write: (line: string) => void lines.push(line) });
  const api = await startTestApi(env.config, { logger });
  await recovered(api);
  return { api, logged: (text) => lines.filter((line) => line.includes(text)) };
}

/** The event types in a batch's log, read past the proxy. */
async function loggedEvents(batchId: string): Promise<string[]> {
  const entries = await direct.xrange(eventLogKey(env.prefix, { kind: 'batch', id: batchId }), '-', '+');
  return entries.map(([, fields]) => JSON.parse(fields[1]!).type as string);
}

describe('a refused enqueue over a stalled Redis', () => {
  it('is answered at ENQUEUE_TIMEOUT_MS, not after its events give up; the events follow once Redis answers', async () => {
    const { api: own, logged } = await apiWithLog();
    try {
      proxy.hold();
      const refused = await refusedBatch(own);
      // The 503 is out while the events' publish still waits on the stalled connection: before,
      // the answer waited for it to give up (its 5 s command timeout), and the events were lost.
      expect(logged('could not publish a progress event')).toEqual([]);
      proxy.release();
      await waitFor(async () => (await loggedEvents(refused.id)).includes('batch.failed'), { what: "the batch's failure events in its log" });
      expect(await loggedEvents(refused.id)).toContain('track.updated');
      expect(logged('could not publish a progress event')).toEqual([]);
    } finally {
      proxy.release();
      await own.close();
    }
  });

  it('an API stopped right after answering still records the webhook deliveries of the failure', async () => {
    const { api: own } = await apiWithLog();
    const endpoint = await own.request('/v1/webhooks', { method: 'POST', json: { url: 'http://127.0.0.1:9/hook', events: ['batch.failed'] } });
    expect(endpoint.status).toBe(201);
    let refused: Refused;
    try {
      proxy.hold();
      refused = await refusedBatch(own);
    } finally {
      // Closed while Redis still stalls: close() waits for the notification the request left.
      await own.close();
      proxy.release();
    }
    const deliveries = await queryRows(env.databaseUrl, "select payload from webhook_deliveries where event_type = 'batch.failed'");
    expect(deliveries.map((d) => d.payload.data.batch_id)).toEqual([refused.id]);
  });
});

describe('/readyz and the flows connection', () => {
  it('is 503 while only the connection that adds flows is down, 200 once it is back', async () => {
    await recovered(api);
    // The flows connection is dropped and reconnects to a silent server; the API's other
    // connections stay up, so reads and events still work.
    proxy.holdNew();
    const clients = (await direct.client('LIST')) as string;
    const flowsIds = clients.split('\n').filter((line) => line.includes(` name=${env.prefix}:flows `)).map((line) => /^id=(\d+)/.exec(line)![1]!);
    expect(flowsIds.length).toBeGreaterThan(0);
    for (const id of flowsIds) await direct.client('KILL', 'ID', id);
    await waitFor(async () => (await flowsStatus(api)) !== 'ready', { what: 'the flows connection to drop' });
    expect(await api.ctx.redis.ping()).toBe('PONG');
    const res = await fetch(`${api.url}/readyz`);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { error: { details: { redis: string } } };
    expect(body.error).toMatchObject({ code: 'not_ready', message: 'not ready: redis unreachable', details: { postgres: 'ok' } });
    expect(body.error.details.redis).toMatch(/^unreachable: /);
    proxy.release();
    await waitFor(async () => (await fetch(`${api.url}/readyz`)).status === 200, { timeoutMs: 30_000, what: '/readyz 200 again' });
    expect(await flowsStatus(api)).toBe('ready');
  });
});
