import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStreamLimit, type StreamLimit } from '../../apps/api/src/events/stream-limit';
import { redisStreamSlots } from '../../apps/api/src/events/stream-slots';
import type { HttpError } from '../../apps/api/src/http-errors';
import { readJson, startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { openSse, type SseStream } from '../helpers/sse';
import { waitFor } from '../helpers/wait';

// SSE_MAX_STREAMS_PER_USER holds for a user's streams on every API process together. Before,
// each process counted its own, so behind a load balancer with N replicas a user could hold
// N times the cap. Two API contexts share one Redis and one database here, as replicas do.
// No worker runs: batches stay pending.
const CAP = 3;
let env: TestEnv;
let one: TestApi;
let two: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ SSE_MAX_STREAMS_PER_USER: String(CAP), SSE_HEARTBEAT_MS: '200' });
  one = await startTestApi(env.config);
  two = await startTestApi(env.config);
});
afterAll(async () => {
  await two?.close();
  await one?.close();
  await env?.cleanup();
});

const auth = async (user = 'user-a') => ({ Authorization: `Bearer ${await tokenFor(user)}` });
const newBatch = async (user = 'user-a') => {
  const created = await createBatch(one, { visionId: 'replicas', sections: sampleSections(1, 'Replicas'), variants: ['voice_only'], voice: 'alloy' }, { user });
  expect(created.status).toBe(201);
  return created.body.id as string;
};
const streamUrl = (api: TestApi, batchId: string) => `${api.url}/v1/audio/batches/${batchId}/events`;
async function open(api: TestApi): Promise<SseStream> {
  const stream = await openSse(streamUrl(api, await newBatch()), await auth());
  await stream.waitFor((e) => e.length >= 1);
  return stream;
}
async function expectRefused(api: TestApi) {
  const res = await fetch(streamUrl(api, await newBatch()), { headers: await auth() });
  expect(res.status).toBe(429);
  expect((await readJson(res)).error).toMatchObject({ code: 'too_many_streams', details: { limit: CAP } });
}

/** A stream limit in front of a route that holds every admitted request open, as a stream would. */
async function serveLimit(limit: StreamLimit, user: string) {
  const app = express();
  app.get('/events', async (req, res) => {
    try {
      if (await limit.admit(req, res, user)) res.status(200).write('open');
    } catch (error) {
      res.status((error as HttpError).status).end();
    }
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`;
  return {
    /** Resolves with the status once the route has answered (for a 200, its first bytes). */
    open: () =>
      new Promise<{ status: number; close(): void }>((resolve, reject) => {
        const client = request(url);
        client.on('error', reject);
        client.on('response', (res) => {
          const answer = { status: res.statusCode ?? 0, close: () => client.destroy() };
          if (answer.status === 200) res.once('data', () => resolve(answer));
          else res.resume().once('end', () => resolve(answer));
        });
        client.end();
      }),
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('the cap on open event streams per user, with two API processes', () => {
  it('counts the user’s streams on both together', async () => {
    const streams = [await open(one), await open(one), await open(two)];
    try {
      // Before: each process admitted up to the cap of its own.
      await expectRefused(two);
      await expectRefused(one);
      // A stream ending on one process frees a slot for the other.
      streams.shift()!.close();
      await waitFor(() => one.ctx.streams.openFor('user-a') === 1 || null, { what: 'the stream on the first API to close' });
      const next = await waitFor(async () => {
        const res = await fetch(streamUrl(two, await newBatch()), { headers: await auth() });
        if (res.status === 200) return res;
        await res.body?.cancel();
        return null;
      }, { what: 'a slot free on the second API' });
      await next.body?.cancel();
    } finally {
      for (const s of streams) s.close();
    }
  });

  it('frees the slots of a process that stopped renewing them once their leases run out, and keeps those renewed', async () => {
    const LEASE = 400;
    const short = redisStreamSlots(one.ctx.redis, env.prefix, LEASE);
    // A process that took every slot of user-b and died: nothing renews them or gives them back.
    for (let i = 0; i < CAP; i++) expect(await short.take('user-b', `dead-${i}`, CAP)).toBe(true);
    const url = streamUrl(one, await newBatch('user-b'));
    const refused = await fetch(url, { headers: await auth('user-b') });
    expect(refused.status).toBe(429);
    await refused.body?.cancel();
    const admitted = await waitFor(async () => {
      const res = await fetch(url, { headers: await auth('user-b') });
      if (res.status === 200) return res;
      await res.body?.cancel();
      return null;
    }, { what: 'the dead process’s slots to expire' });
    await admitted.body?.cancel();

    // A process that lives renews its streams' leases: their slots stay taken however long they last.
    const limit = createStreamLimit(1, short);
    const served = await serveLimit(limit, 'user-c');
    const key = `${env.prefix}:streams:user-c`;
    const leaseEnd = async () => Number((await one.ctx.redis.zrange(key, 0, -1, 'WITHSCORES'))[1] ?? 0);
    try {
      const client = await served.open();
      expect(client.status).toBe(200);
      const first = await leaseEnd();
      expect(first).toBeGreaterThan(0);
      await waitFor(async () => (await leaseEnd()) > first + 2 * LEASE || null, { what: 'the lease renewed past two of its lengths' });
      expect(await short.take('user-c', 'another', 1)).toBe(false);
      // Given back as soon as the stream ends.
      client.close();
      await waitFor(async () => (await one.ctx.redis.zcard(key)) === 0 || null, { what: 'the slot given back' });
    } finally {
      limit.close();
      await served.close();
    }
  });

  it('admits by this process’s own count while Redis cannot be asked, rather than answer 503 (which stops an EventSource for good)', async () => {
    const away = new Redis('redis://127.0.0.1:1', { maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
    away.on('error', () => {});
    const limit = createStreamLimit(2, redisStreamSlots(away, env.prefix));
    const served = await serveLimit(limit, 'user-d');
    const clients: { close(): void }[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const client = await served.open();
        expect(client.status).toBe(200);
        clients.push(client);
      }
      expect((await served.open()).status).toBe(429);
      expect(limit.openFor('user-d')).toBe(2);
    } finally {
      for (const c of clients) c.close();
      limit.close();
      await served.close();
      away.disconnect();
    }
  });
});
