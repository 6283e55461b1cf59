import { once } from 'node:events';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStreamLimit } from '../../apps/api/src/events/stream-limit';
import { redisStreamSlots } from '../../apps/api/src/events/stream-slots';
import { createPublisher } from '@soundqueue/shared/events';
import { readJson, startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { openSse, type SseStream } from '../helpers/sse';
import { waitFor } from '../helpers/wait';

// SSE_MAX_STREAMS_PER_USER: one user's open event streams are capped (on several API processes
// together: stream-limit-replicas.test.ts), and every way a stream ends gives its slot back.
// Before, a user could hold any number open.
// No worker runs: batches stay pending unless a test cancels one (which ends it at once).
const CAP = 3;
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ SSE_MAX_STREAMS_PER_USER: String(CAP), SSE_HEARTBEAT_MS: '200' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const auth = async (user = 'user-a') => ({ Authorization: `Bearer ${await tokenFor(user)}` });
const newBatch = async (user = 'user-a') => {
  const created = await createBatch(api, { visionId: 'cap', sections: sampleSections(1, 'Cap'), variants: ['voice_only'], voice: 'alloy' }, { user });
  expect(created.status).toBe(201);
  return created.body.id as string;
};
const streamUrl = (batchId: string, base = api.url) => `${base}/v1/audio/batches/${batchId}/events`;
const openFor = (user = 'user-a') => api.ctx.streams.openFor(user);
const settled = (n: number, user = 'user-a', who: TestApi = api) =>
  waitFor(() => who.ctx.streams.openFor(user) === n || null, { what: `${user} holding ${n} streams (holds ${who.ctx.streams.openFor(user)})` });

/** Opens `n` streams for user-a, each on a batch of its own, and waits for their snapshots. */
async function openStreams(n: number, base = api.url): Promise<SseStream[]> {
  const streams: SseStream[] = [];
  for (let i = 0; i < n; i++) {
    const stream = await openSse(streamUrl(await newBatch(), base), await auth());
    await stream.waitFor((e) => e.length >= 1);
    streams.push(stream);
  }
  return streams;
}

async function expectRefused(res: Response) {
  expect(res.status).toBe(429);
  expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
  expect(await readJson(res)).toEqual({
    error: { code: 'too_many_streams', message: `at most ${CAP} event streams may be open at once per user; close one first`, details: { limit: CAP } },
  });
}

describe('the cap on open event streams per user', () => {
  it('takes no slot for a HEAD: it is answered as a stream would start, and ends', async () => {
    const batchId = await newBatch();
    for (let i = 0; i < CAP + 2; i++) {
      const res = await fetch(streamUrl(batchId), { method: 'HEAD', headers: await auth() });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      expect(await res.text()).toBe('');
    }
    expect(openFor()).toBe(0);
    // With a stream token in the URL, as EventSource would open it.
    const tokenRes = await api.request('/v1/stream-tokens', { method: 'POST', user: 'user-a' });
    const { token } = await readJson(tokenRes);
    const byToken = await fetch(`${streamUrl(batchId)}?access_token=${token}`, { method: 'HEAD' });
    expect(byToken.status).toBe(200);
    expect(openFor()).toBe(0);
    // Someone else's batch: 404, as a GET would answer.
    expect((await fetch(streamUrl(batchId), { method: 'HEAD', headers: await auth('user-b') })).status).toBe(404);
    const streams = await openStreams(CAP);
    streams.forEach((s) => s.close());
    await settled(0);
  });

  it('refuses the stream over the cap with 429 and Retry-After, and takes one again once a stream closes', async () => {
    const streams = await openStreams(CAP);
    try {
      expect(openFor()).toBe(CAP);
      const batchId = await newBatch();
      // Refused before it starts, again and again: a refusal takes no slot.
      for (let i = 0; i < 3; i++) await expectRefused(await fetch(streamUrl(batchId), { headers: await auth() }));
      // A HEAD answers what the GET would.
      const head = await fetch(streamUrl(batchId), { method: 'HEAD', headers: await auth() });
      expect(head.status).toBe(429);
      expect(head.headers.get('retry-after')).toMatch(/^\d+$/);
      // Books count against the same cap.
      await expectRefused(await fetch(`${api.url}/v1/books/00000000-0000-4000-8000-000000000000/events`, { headers: await auth() }));
      // Another user has slots of their own.
      const other = await openSse(streamUrl(await newBatch('user-b')), await auth('user-b'));
      await other.waitFor((e) => e.length >= 1);
      other.close();
      await settled(0, 'user-b');

      streams.shift()!.close();
      await settled(CAP - 1);
      const next = await openSse(streamUrl(batchId), await auth());
      await next.waitFor((e) => e.length >= 1);
      streams.push(next);
      expect(openFor()).toBe(CAP);
      await expectRefused(await fetch(streamUrl(batchId), { headers: await auth() }));
    } finally {
      for (const s of streams) s.close();
    }
    await settled(0);
  });

  it('gives the slot back from a 404: another user’s batch, an unknown id, a malformed id', async () => {
    const streams = await openStreams(CAP - 1);
    try {
      const theirs = await newBatch('user-b');
      const attempts = [streamUrl(theirs), streamUrl('00000000-0000-4000-8000-000000000000'), streamUrl('not-an-id'), `${api.url}/v1/books/${theirs}/events`];
      for (let round = 0; round < 2; round++) {
        for (const url of attempts) {
          const res = await fetch(url, { headers: await auth() });
          expect(res.status, url).toBe(404);
          expect((await readJson(res)).error.code).toBe('not_found');
        }
      }
      await settled(CAP - 1);
      // Had any 404 kept its slot, this one would be refused.
      const last = await openSse(streamUrl(await newBatch()), await auth());
      await last.waitFor((e) => e.length >= 1);
      streams.push(last);
      expect(openFor()).toBe(CAP);
    } finally {
      for (const s of streams) s.close();
    }
    await settled(0);
  });

  it('gives the slot back when the stream ends by itself: its terminal event, or a subject already finished', async () => {
    const streams = await openStreams(CAP);
    try {
      // A batch cancelled while nothing runs ends at once: its stream gets batch.cancelled and ends.
      const endingId = (streams[0]!.events[0]!.data as { id: string }).id;
      expect((await api.request(`/v1/audio/batches/${endingId}/cancel`, { method: 'POST' })).status).toBe(202);
      await streams[0]!.ended;
      expect(streams[0]!.events.at(-1)!.event).toBe('batch.cancelled');
      await settled(CAP - 1);
      // Its reconnects have the end: answered 204, and no slot kept (else the third would be refused).
      for (let i = 0; i < 3; i++) {
        const res = await fetch(streamUrl(endingId), { headers: { ...(await auth()), 'Last-Event-ID': streams[0]!.events.at(-1)!.id } });
        expect(res.status).toBe(204);
        await settled(CAP - 1);
      }
      // A stream opened on the finished batch sends the final snapshot and ends: twice, and
      // neither keeps a slot (with a leak the second would already be refused).
      for (let i = 0; i < 2; i++) {
        const late = await openSse(streamUrl(endingId), await auth());
        await late.ended;
        expect(late.events.map((e) => e.event)).toEqual(['snapshot']);
        await settled(CAP - 1);
      }
      // A terminal event published by a worker ends a live stream the same way.
      const publish = createPublisher(api.ctx.redis, env.prefix);
      const otherId = (streams[1]!.events[0]!.data as { id: string }).id;
      await publish([{ subject: { kind: 'batch', id: otherId }, type: 'batch.failed', data: { status: 'failed' }, terminal: true }]);
      await streams[1]!.ended;
      await settled(CAP - 2);
    } finally {
      for (const s of streams) s.close();
    }
    await settled(0);
  });

  it('gives every slot back when the API process ends its streams on shutdown', async () => {
    const second = await startTestApi(env.config);
    try {
      const streams = await openStreams(CAP, second.url);
      expect(second.ctx.streams.openFor('user-a')).toBe(CAP);
      // The listener closes and the open streams are ended.
      await second.close();
      await Promise.all(streams.map((s) => s.ended));
      await settled(0, 'user-a', second);
    } finally {
      await second.close().catch(() => {});
    }
  });

  it('takes no slot for a client that left before its stream was admitted (during authentication)', async () => {
    // The auth middleware awaits token checks; a client can leave meanwhile, and its response
    // has then closed before the route runs, never to say so again. A gate the test opens
    // stands for that wait, in front of the real limit.
    const limit = createStreamLimit(1, redisStreamSlots(api.ctx.redis, env.prefix));
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    let serverSawClose!: () => void;
    const closedOnServer = new Promise<void>((resolve) => (serverSawClose = resolve));
    let admitted: Promise<boolean> | undefined;
    const app = express();
    app.get('/events', (req, res) => {
      res.on('close', serverSawClose);
      admitted = gate.then(() => limit.admit(req, res, 'user-a'));
    });
    const server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const req = request(`http://127.0.0.1:${(server.address() as AddressInfo).port}/events`);
      req.on('error', () => {});
      req.end();
      await waitFor(() => (admitted ? true : null), { what: 'the request at the gate' });
      req.destroy();
      await closedOnServer;
      openGate();
      expect(await admitted).toBe(false);
      expect(limit.openFor('user-a')).toBe(0);
    } finally {
      limit.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
