import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublisher } from '@soundqueue/shared/events';
import { Redis } from 'ioredis';
import { startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { openSse } from '../helpers/sse';

// An event stream (re)connecting while Redis is away. Its event log could not be read, and
// the stream answered 503 (with a Last-Event-ID, EventSource's every reconnect) or a 200 that
// ended before its first event (without). EventSource treats any status but 200 and 204 as
// final: a page whose stream dropped during a Redis restart (its API replica restarting, a
// network blip) stopped following its batch for good. The state is PostgreSQL's: the stream
// now starts from a snapshot whose id names no log entry, waits while Redis is away, and once
// its events subscriber is back ends, so the client resumes with a fresh snapshot and its log.
let redis: OwnRedis;
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  redis = await startOwnRedis();
  env = await createTestEnv({ REDIS_URL: redis.url, SSE_HEARTBEAT_MS: '200' });
  api = await startTestApi(env.config);
}, 60_000);
afterAll(async () => {
  await api?.close();
  await env?.cleanup().catch(() => {});
  await redis?.stop();
});

describe('an event stream opened while Redis is away', () => {
  it('starts from a snapshot, and ends once Redis is back so that its client resumes', async () => {
    const created = await createBatch(api, { visionId: 'redis-away', sections: sampleSections(1), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    const client = new Redis(redis.url);
    const publish = createPublisher(client, env.config.QUEUE_PREFIX);
    await publish([{ subject: { kind: 'batch', id: batchId }, type: 'batch.updated', data: { n: 1 } }]);
    const logged = await client.xrange(`${env.config.QUEUE_PREFIX}:events:batch:${batchId}`, '-', '+');
    expect(logged).toHaveLength(1);
    const loggedId = logged[0]![0];
    client.disconnect();

    await redis.stop();
    const url = `${api.url}/v1/audio/batches/${batchId}/events`;
    const headers = { Authorization: `Bearer ${await tokenFor('user-a')}` };
    const resumed = await openSse(url, { ...headers, 'Last-Event-ID': loggedId });
    const fresh = await openSse(url, headers);
    try {
      for (const stream of [resumed, fresh]) {
        const [snapshot] = await stream.waitFor((e) => e.length >= 1, 20_000);
        expect(snapshot).toMatchObject({ event: 'snapshot', id: '0-0', data: { id: batchId, status: 'pending' } });
      }
      // Redis back (empty, as after a restart): the streams end, and a resume from the
      // snapshot's id starts over from a snapshot.
      await redis.start();
      await Promise.all([resumed.ended, fresh.ended]);
      const again = await openSse(url, { ...headers, 'Last-Event-ID': '0-0' });
      try {
        const [snapshot] = await again.waitFor((e) => e.length >= 1, 20_000);
        expect(snapshot).toMatchObject({ event: 'snapshot', data: { id: batchId } });
      } finally {
        again.close();
      }
    } finally {
      resumed.close();
      fresh.close();
    }
  }, 90_000);
});
