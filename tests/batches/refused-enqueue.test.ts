import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
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
  // A short enqueue timeout so each outage is brief (the API's other connection still takes
  // its 5 s command timeout to give up on the failure events it publishes).
  env = await createTestEnv({ REDIS_URL: proxy.url, ENQUEUE_TIMEOUT_MS: '1000' });
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
