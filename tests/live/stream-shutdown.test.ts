import { Agent, get, Server, type IncomingMessage } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createPublisher } from '@soundqueue/shared/events';
import { readJson, startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { openSse, type SseStream } from '../helpers/sse';
import { waitFor } from '../helpers/wait';

// An API process shutting down (SIGTERM: serve()'s close()) ends its event streams at once and
// cleanly, with nothing that reads as the end of the batch, so each client reconnects to
// another replica and resumes from its Last-Event-ID; a stream asked for meanwhile is refused
// with 503. Before, close() waited 5 s for the streams and then reset their connections.
// No worker runs: batches stay pending unless a test cancels one.
let env: TestEnv;
const apis: TestApi[] = [];

beforeAll(async () => {
  env = await createTestEnv({ SSE_HEARTBEAT_MS: '60000' });
});
afterEach(async () => {
  vi.restoreAllMocks();
  for (const api of apis.splice(0)) await api.close().catch(() => {});
});
afterAll(async () => {
  await env?.cleanup();
});

async function startApi(): Promise<TestApi> {
  const api = await startTestApi(env.config);
  apis.push(api);
  return api;
}
const auth = async (user = 'user-a') => ({ Authorization: `Bearer ${await tokenFor(user)}` });
const newBatch = async (api: TestApi) => {
  const created = await createBatch(api, { visionId: 'shutdown', sections: sampleSections(1, 'Shutdown'), variants: ['voice_only'], voice: 'alloy' });
  expect(created.status).toBe(201);
  return created.body.id as string;
};
const streamUrl = (api: TestApi, batchId: string) => `${api.url}/v1/audio/batches/${batchId}/events`;
const logKey = (batchId: string) => `${env.prefix}:events:batch:${batchId}`;

/** Opens a batch's stream and has it receive one logged change, so its last id is a log id. */
async function streamWithOneChange(api: TestApi, batchId: string): Promise<SseStream> {
  const stream = await openSse(streamUrl(api, batchId), await auth());
  const [snapshot] = await stream.waitFor((e) => e.length >= 1);
  await createPublisher(api.ctx.redis, env.prefix)([
    { subject: { kind: 'batch', id: batchId }, type: 'batch.updated', data: { status: 'pending', version: snapshot!.data.version }, terminal: false },
  ]);
  await stream.waitFor((e) => e.length >= 2);
  return stream;
}

/**
 * A stream read over a connection its client keeps when idle until the server closes it, as a
 * browser or a proxy may for minutes (fetch's own client lets go of one after 4 s by itself).
 */
async function openKeptAlive(url: string, headers: Record<string, string>) {
  const agent = new Agent({ keepAlive: true });
  const res = await new Promise<IncomingMessage>((resolve, reject) => get(url, { agent, headers }, resolve).on('error', reject));
  expect(res.statusCode).toBe(200);
  let text = '';
  res.setEncoding('utf8');
  res.on('data', (chunk: string) => (text += chunk));
  const body = new Promise<string>((resolve, reject) => {
    res.on('end', () => resolve(text));
    res.on('error', reject);
    res.on('aborted', () => reject(new Error('the connection was cut')));
  });
  body.catch(() => {}); // the test awaits it; one failing before then must not add an unhandled rejection
  return {
    text: () => text,
    /** The whole body once the response has ended; rejects when its connection is cut first. */
    body,
    connectionClosed: new Promise<void>((resolve) => res.socket.once('close', () => resolve())),
  };
}

describe('event streams when the API shuts down', () => {
  it('are ended at once and cleanly, not as the end of the batch, and resume from their last id on another API', async () => {
    const leaving = await startApi();
    const endingId = await newBatch(leaving);
    const quietId = await newBatch(leaving);
    const ending = await streamWithOneChange(leaving, endingId);
    const quiet = await streamWithOneChange(leaving, quietId);
    expect(leaving.ctx.streams.openFor('user-a')).toBe(2);

    await leaving.close();
    // Each body ended as a response does (`ended` rejects on a reset connection: "terminated").
    await ending.ended;
    await quiet.ended;
    expect(leaving.ctx.streams.openFor('user-a')).toBe(0);
    for (const stream of [ending, quiet]) {
      // The start's retry, then a shorter one for the reconnect; no event, no final-snapshot id.
      expect(stream.retries).toHaveLength(2);
      expect(stream.retries[1]).toBeLessThan(stream.retries[0]!);
      expect(stream.events.map((e) => e.event)).toEqual(['snapshot', 'batch.updated']);
      expect(stream.events.some((e) => e.id.startsWith('end-'))).toBe(false);
    }

    // Another replica, on the same database and Redis. Meanwhile one batch ended (cancelled,
    // as nothing runs): its client, resuming, gets exactly what it missed, the end last.
    const staying = await startApi();
    expect((await staying.request(`/v1/audio/batches/${endingId}/cancel`, { method: 'POST' })).status).toBe(202);
    const lastSeen = ending.events.at(-1)!.id;
    const missed = (await staying.ctx.redis.xrange(logKey(endingId), `(${lastSeen}`, '+')).map(([id]) => id);
    expect(missed.length).toBeGreaterThan(0);
    const resumed = await openSse(streamUrl(staying, endingId), { ...(await auth()), 'Last-Event-ID': lastSeen });
    await resumed.ended;
    expect(resumed.events.map((e) => e.id)).toEqual(missed);
    expect(resumed.events.at(-1)!.event).toBe('batch.cancelled');

    // The other missed nothing: it is not answered 204 (which would stop EventSource for
    // good) nor sent a snapshot again, and goes on live.
    const quietResumed = await openSse(streamUrl(staying, quietId), { ...(await auth()), 'Last-Event-ID': quiet.events.at(-1)!.id });
    try {
      await createPublisher(staying.ctx.redis, env.prefix)([
        { subject: { kind: 'batch', id: quietId }, type: 'batch.updated', data: { status: 'pending', version: quiet.events[0]!.data.version }, terminal: false },
      ]);
      const [next] = await quietResumed.waitFor((e) => e.length >= 1);
      expect(next!.event).toBe('batch.updated');
      expect(quietResumed.events).toHaveLength(1);
    } finally {
      quietResumed.close();
    }
  });

  it('have their connections let go once their end is sent, so close() need not cut any', async () => {
    const leaving = await startApi();
    // As behind a load balancer, whose idle timeout the server's must exceed: a connection
    // whose response is done is then kept a minute unless the server lets it go.
    leaving.server.keepAliveTimeout = 60_000;
    const batchId = await newBatch(leaving);
    const stream = await openKeptAlive(streamUrl(leaving, batchId), await auth());
    await waitFor(() => stream.text().includes('event: snapshot') || null, { what: 'the snapshot' });
    const cut = vi.spyOn(Server.prototype, 'closeAllConnections');

    await leaving.close();
    expect(cut).not.toHaveBeenCalled();
    expect(await stream.body).toMatch(/\n\nretry: \d+\n\n$/);
    await stream.connectionClosed;
  });

  it('end a stream asked for once the shutdown has begun as an empty one with a retry, no slot taken (a 503 would stop an EventSource for good)', async () => {
    const api = await startApi();
    const batchId = await newBatch(api);
    // What close() does once it has stopped listening; the listener stays open here so that a
    // request can still arrive, as one already on a kept-alive connection would.
    api.ctx.streams.close();
    const res = await fetch(streamUrl(api, batchId), { headers: await auth() });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(await res.text()).toMatch(/^retry: \d+\n\n$/);
    // Still only for the owner: a stranger's request is refused as ever.
    const stranger = await fetch(streamUrl(api, batchId), { headers: await auth('user-b') });
    expect(stranger.status).toBe(404);
    expect(api.ctx.streams.openFor('user-a')).toBe(0);
  });
});
