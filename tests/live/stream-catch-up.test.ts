import type { AddressInfo } from 'node:net';
import express from 'express';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublisher, type ProgressEvent, type Publish, type Subject } from '@soundqueue/shared/events';
import { createWorkerConnection } from '@soundqueue/shared/redis';
import { EventHub } from '../../apps/api/src/events/event-hub';
import { streamEvents, type Snapshot } from '../../apps/api/src/events/sse';
import { createTestEnv, TEST_REDIS_URL, type TestEnv } from '../helpers/services';
import { openSse } from '../helpers/sse';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

// A stream whose events subscriber loses its connection catches up from the log with what was
// published meanwhile. Before, when the subscriber came back while a stream was being set up,
// the stream first sent the live events it had held back (some from before the loss, some
// from after the return), and then caught up from the newest of them: the events published
// while the subscriber was away, older than that, were skipped for good. The hub's
// subscriber goes through a TCP proxy the test holds and cuts; the stream's snapshot waits on
// a gate the test opens, so every step happens in the order the test sets.
let env: TestEnv;
let redis: Redis;
let proxy: TcpProxy;
let subscriber: Redis;
let hub: EventHub;
let publish: Publish;

beforeAll(async () => {
  env = await createTestEnv();
  redis = new Redis(TEST_REDIS_URL);
  proxy = await startTcpProxy(TEST_REDIS_URL);
  subscriber = createWorkerConnection(proxy.url, `${env.prefix}:catch-up-subscriber`);
  hub = new EventHub(redis, subscriber, env.prefix);
  publish = createPublisher(redis, env.prefix);
});
afterAll(async () => {
  await hub?.close();
  await proxy?.close();
  redis?.disconnect();
  await env?.cleanup();
});

describe('a stream whose events subscriber reconnects while the stream is being set up', () => {
  it('sends every event published while the subscriber was away, in order, before the ones after', async () => {
    const subject: Subject = { kind: 'batch', id: 'b0a7c0de-0000-4000-8000-000000000001' };
    const note = (n: number, terminal = false): ProgressEvent => ({ subject, type: terminal ? 'batch.completed' : 'batch.updated', data: { n }, terminal });

    let asked!: () => void;
    const snapshotAsked = new Promise<void>((resolve) => (asked = resolve));
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const snapshot = async (): Promise<Snapshot> => {
      asked();
      await gate;
      return { data: { n: 0 }, terminal: false, run: 1 };
    };
    const app = express();
    const shutdown = new AbortController();
    app.get('/events', (req, res) => void streamEvents(req, res, { hub, subject, snapshot, heartbeatMs: 60_000, shutdown: shutdown.signal }));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));

    // What the hub hands its listeners, and when its subscription is back, seen from beside the stream.
    const seen: number[] = [];
    let returns = 0;
    const unlisten = await hub.listen(
      subject,
      (event) => seen.push(event.data.n as number),
      () => (returns += 1),
    );
    // Logged before the stream starts, so the snapshot's id is one the log holds. (A stream whose
    // snapshot saw an empty log, id 0-0, cannot tell a catch-up of the whole log from one Redis
    // lost part of: it ends, and its client's reconnect gets a fresh snapshot.)
    await publish([note(0)]);
    await waitFor(() => seen.includes(0) || null, { what: 'event 0 at the hub' });
    const stream = await openSse(`http://127.0.0.1:${(server.address() as AddressInfo).port}/events`);
    try {
      await snapshotAsked; // the stream listens, and has read the log's newest id
      await publish([note(1)]);
      await waitFor(() => seen.includes(1) || null, { what: 'event 1 at the hub' });

      // The subscriber's connection drops; its new one is held, so nothing reaches it.
      proxy.holdNew();
      proxy.cut();
      await waitFor(() => subscriber.status !== 'ready' || null, { what: 'the subscriber to notice' });
      await publish([note(2)]);
      proxy.release();
      await waitFor(() => returns === 1 || null, { what: 'the subscription back' });
      await publish([note(3)]);
      await waitFor(() => seen.includes(3) || null, { what: 'event 3 at the hub' });
      expect(seen).toEqual([0, 1, 3]); // 2 went by while the subscriber was away

      openGate();
      await stream.waitFor((e) => e.some((x) => x.data.n === 3));
      await publish([note(4, true)]);
      await stream.ended;
      // Before: [0, 1, 3, 4]: 2 never sent.
      expect(stream.events.map((e) => [e.event, e.data.n])).toEqual([
        ['snapshot', 0],
        ['batch.updated', 1],
        ['batch.updated', 2],
        ['batch.updated', 3],
        ['batch.completed', 4],
      ]);
    } finally {
      unlisten();
      stream.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
