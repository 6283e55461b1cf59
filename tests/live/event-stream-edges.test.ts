import { once } from 'node:events';
import { request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublisher, type ProgressEvent } from '@soundqueue/shared/events';
import { MAX_UNREAD_BYTES, streamEvents } from '../../apps/api/src/events/sse';
import { startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { createTestEnv, TEST_REDIS_URL, type TestEnv } from '../helpers/services';
import { openSse } from '../helpers/sse';
import { waitFor } from '../helpers/wait';

// Event streams at their edges: the events subscriber losing its connection, a client that
// stops reading, and clients that leave while their stream is being set up. No worker runs:
// the test publishes progress events itself, as a worker does.
let env: TestEnv;
let api: TestApi;
let redis: Redis;

beforeAll(async () => {
  env = await createTestEnv({ SSE_HEARTBEAT_MS: '200' });
  api = await startTestApi(env.config);
  redis = new Redis(TEST_REDIS_URL);
});
afterAll(async () => {
  redis?.disconnect();
  await api?.close();
  await env?.cleanup();
});

const auth = async () => ({ Authorization: `Bearer ${await tokenFor('user-a')}` });
const newBatch = async () => {
  const created = await createBatch(api, { visionId: 'edges', sections: sampleSections(1, 'Edges'), variants: ['voice_only'], voice: 'alloy' });
  expect(created.status).toBe(201);
  return created.body.id as string;
};
const note = (batchId: string, n: number, extra: Record<string, unknown> = {}): ProgressEvent => ({
  subject: { kind: 'batch', id: batchId },
  type: 'batch.updated',
  data: { n, ...extra },
});

describe('event streams', () => {
  it('catch up from the log with what was published while the events subscriber was reconnecting', async () => {
    const batchId = await newBatch();
    const stream = await openSse(`${api.url}/v1/audio/batches/${batchId}/events`, await auth());
    try {
      await stream.waitFor((e) => e.length >= 1);
      const publish = createPublisher(redis, env.config.QUEUE_PREFIX);
      await publish([note(batchId, 1)]);
      await stream.waitFor((e) => e.some((x) => x.data.n === 1));
      // The API's subscriber loses its connection; these are published before it is back (it
      // reconnects after a timer, and Redis drops a killed client's subscriptions at once).
      const clients = await redis.client('LIST');
      const id = /id=(\d+) [^\n]*name=(\S+)/g;
      const ours = [...String(clients).matchAll(id)].find((m) => m[2] === `${env.config.QUEUE_PREFIX}:events-subscriber`);
      expect(ours, 'the API names its events subscriber').toBeTruthy();
      await redis.client('KILL', 'ID', ours![1]!);
      await publish([note(batchId, 2)]);
      await publish([note(batchId, 3)]);
      // Before: 2 and 3 never reached the stream (pub/sub keeps nothing for an absent subscriber).
      await stream.waitFor((e) => e.some((x) => x.data.n === 3), 20_000);
      await publish([note(batchId, 4)]);
      await stream.waitFor((e) => e.some((x) => x.data.n === 4));
      const logged = await redis.xrange(`${env.config.QUEUE_PREFIX}:events:batch:${batchId}`, '-', '+');
      expect(stream.events.slice(1).map((e) => e.id)).toEqual(logged.map(([entryId]) => entryId));
      expect(stream.events.slice(1).map((e) => e.data.n)).toEqual([1, 2, 3, 4]);
    } finally {
      stream.close();
    }
  });

  it('end the stream of a client that stops reading instead of holding its events in memory', async () => {
    const batchId = await newBatch();
    const headers = await auth();
    // A raw request whose response is never read: the client's socket buffers fill, then the
    // server's. (A paused player, or a script that opens streams and never reads them.)
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(`${api.url}/v1/audio/batches/${batchId}/events`, { headers: { ...headers, Accept: 'text/event-stream' } }, resolve);
      req.on('error', reject);
      req.end();
    });
    expect(res.statusCode).toBe(200);
    res.pause();
    try {
      await waitFor(() => api.ctx.events.listenerCount() === 1 || null, { what: 'the stream listening' });
      const publish = createPublisher(redis, env.config.QUEUE_PREFIX);
      const blob = 'x'.repeat(64 * 1024);
      // Far more than the socket buffers and the stream's limit together (128 MiB); stops as
      // soon as the server has let the stream go. Before, it kept writing into memory for as
      // long as the client stayed silent, and the stream stayed open.
      for (let i = 0; i < 2_000 && api.ctx.events.listenerCount() > 0; i++) {
        await publish([note(batchId, i, { blob })]);
        if (i % 20 === 19) await new Promise((resolve) => setImmediate(resolve));
      }
      await waitFor(() => api.ctx.events.listenerCount() === 0 || null, { what: 'the stream let go', timeoutMs: 20_000 });
      expect(MAX_UNREAD_BYTES).toBe(1024 * 1024);
    } finally {
      res.destroy();
    }
  });

  it('leave nothing behind for a client that went away while its stream was being set up', async () => {
    // The route checks ownership before the stream starts; a client that leaves during that
    // check has closed its connection before streamEvents is called. Here a gate the test
    // opens stands for that check, in front of the real streamEvents and the API's real hub.
    // Before, such a stream stayed (listener and heartbeat) until its batch ended: hours, or never.
    const batchId = await newBatch();
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    let serverSawClose!: () => void;
    const closedOnServer = new Promise<void>((resolve) => (serverSawClose = resolve));
    let handled: Promise<void> | undefined;
    const app = express();
    app.get('/events', (req, res) => {
      res.on('close', serverSawClose);
      handled = (async () => {
        await gate;
        await streamEvents(req, res, { hub: api.ctx.events, subject: { kind: 'batch', id: batchId }, heartbeatMs: 200, shutdown: new AbortController().signal, snapshot: async () => ({ data: {}, terminal: false, run: 1 }) });
      })();
    });
    const server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      await waitFor(() => api.ctx.events.listenerCount() === 0 || null, { what: 'no stream open' });
      const req = request(`http://127.0.0.1:${(server.address() as AddressInfo).port}/events`);
      req.on('error', () => {});
      req.end();
      await waitFor(() => (handled ? true : null), { what: 'the request at the gate' });
      req.destroy();
      await closedOnServer;
      openGate();
      await handled!;
      expect(api.ctx.events.listenerCount()).toBe(0);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
  it('start a client whose Last-Event-ID is past the newest logged event over from a snapshot, rather than drop every event after', async () => {
    // No id the log gave is past its newest entry: such an id is another subject's, or one
    // from a log Redis lost and made again with a clock behind. Before, the stream replayed
    // nothing from it and then dropped every live event as "already sent", its terminal one
    // too: a stream that never showed anything and never ended.
    const batchId = await newBatch();
    const publish = createPublisher(redis, env.config.QUEUE_PREFIX);
    await publish([note(batchId, 1)]);
    const [[newestId]] = (await redis.xrevrange(`${env.config.QUEUE_PREFIX}:events:batch:${batchId}`, '+', '-', 'COUNT', 1)) as [[string, string[]]];
    const ahead = `${Number(newestId.split('-')[0]) + 3_600_000}-0`;
    const stream = await openSse(`${api.url}/v1/audio/batches/${batchId}/events`, { ...(await auth()), 'Last-Event-ID': ahead });
    try {
      await stream.waitFor((e) => e.some((x) => x.event === 'snapshot'), 5_000);
      await publish([note(batchId, 2)]);
      await stream.waitFor((e) => e.some((x) => x.data.n === 2), 5_000);
      expect(stream.events.map((e) => e.event)).toEqual(['snapshot', 'batch.updated']);
    } finally {
      stream.close();
    }
  });
});
