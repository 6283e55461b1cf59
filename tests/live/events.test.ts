import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, startTestWorker, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { postBook } from '../helpers/books';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { freePort, killAll, spawnApi } from '../helpers/processes';
import { idLess, openSse } from '../helpers/sse';

let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ SSE_HEARTBEAT_MS: '200', SOUNDSCAPE_SECONDS: '4' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const auth = async (user = 'user-a') => ({ Authorization: `Bearer ${await tokenFor(user)}` });
const body = (n: number) => ({ visionId: 'live', sections: sampleSections(n, 'Live'), variants: ['voice_only'], voice: 'alloy' });

function expectOrdered(ids: string[]) {
  for (let i = 1; i < ids.length; i++) expect(idLess(ids[i - 1]!, ids[i]!), `${ids[i - 1]} < ${ids[i]}`).toBe(true);
}

describe('batch event streams', () => {
  it('send a snapshot, then every change in order, heartbeats, and end after the terminal event', async () => {
    const created = await createBatch(api, body(2));
    const stream = await openSse(`${api.url}/v1/audio/batches/${created.body.id}/events`, await auth());
    await stream.waitFor((e) => e.length >= 1);
    expect(stream.events[0]).toMatchObject({ event: 'snapshot', data: { id: created.body.id, status: 'pending', tracks_pending: 2 } });
    expect(stream.events[0]!.data.tracks).toHaveLength(2);
    await stream.waitFor(() => stream.comments.includes('heartbeat'));

    // With two API processes, a stream on the second sees the same events.
    const port = await freePort();
    const second = spawnApi({ ...env.env, PORT: String(port) });
    await second.ready;
    const mirror = await openSse(`http://127.0.0.1:${port}/v1/audio/batches/${created.body.id}/events`, await auth());
    await mirror.waitFor((e) => e.length >= 1);

    const worker = await startTestWorker(env.config);
    try {
      await stream.ended;
      await mirror.ended;
    } finally {
      await worker.close();
      await second.kill();
    }
    const changes = stream.events.slice(1);
    expectOrdered(changes.map((e) => e.id));
    const types = changes.map((e) => e.event);
    expect(types.filter((t) => t === 'track.updated').length).toBeGreaterThanOrEqual(6); // generating, mixing, completed × 2
    expect(types).toContain('batch.updated');
    expect(types.at(-1)).toBe('batch.completed');
    expect(changes.at(-1)!.data).toMatchObject({ status: 'completed', tracksCompleted: 2, tracksPending: 0 });
    // Counters only ever move forward in the stream.
    const completed = changes.filter((e) => e.event === 'batch.updated').map((e) => e.data.tracksCompleted);
    expect([...completed].sort((a, b) => a - b)).toEqual(completed);
    expect(mirror.events.slice(1).map((e) => e.id)).toEqual(changes.map((e) => e.id));

    // A stream opened after the end gets the final snapshot and ends at once, with an id
    // saying it has the end of run 1.
    const late = await openSse(`${api.url}/v1/audio/batches/${created.body.id}/events`, await auth());
    await late.ended;
    expect(late.events).toHaveLength(1);
    expect(late.events[0]!.data.status).toBe('completed');
    expect(late.events[0]!.id).toBe('end-1');

    // One resuming after the terminal event (EventSource reconnects whenever a stream closes,
    // with the last id it saw) has missed nothing: 204, which stops EventSource reconnecting.
    const terminalId = changes.at(-1)!.id;
    const resumed = await fetch(`${api.url}/v1/audio/batches/${created.body.id}/events`, { headers: { ...(await auth()), 'Last-Event-ID': terminalId } });
    expect(resumed.status).toBe(204);
    expect(await resumed.text()).toBe('');
    // An id Redis cannot hold (over 64 bits) is an id we never sent: a fresh snapshot, as for
    // any unknown id (it broke the replay mid-stream, leaving an empty stream).
    for (const odd of ['99999999999999999999-0', '18446744073709551616-0', '0-18446744073709551616']) {
      const fresh = await openSse(`${api.url}/v1/audio/batches/${created.body.id}/events`, { ...(await auth()), 'Last-Event-ID': odd });
      await fresh.ended;
      expect(fresh.events.map((e) => e.event), odd).toEqual(['snapshot']);
    }
    // Resuming from before the end replays the rest, terminal event included, and ends there.
    const before = changes.at(-3)!.id;
    const replayed = await openSse(`${api.url}/v1/audio/batches/${created.body.id}/events`, { ...(await auth()), 'Last-Event-ID': before });
    await replayed.ended;
    expect(replayed.events.map((e) => e.id)).toEqual(changes.slice(-2).map((e) => e.id));
  });

  it('resume with Last-Event-ID across an API restart without a gap', async () => {
    const created = await createBatch(api, body(3));
    const firstPort = await freePort();
    const first = spawnApi({ ...env.env, PORT: String(firstPort) }, 'api-1');
    await first.ready;
    const stream = await openSse(`http://127.0.0.1:${firstPort}/v1/audio/batches/${created.body.id}/events`, await auth());
    await stream.waitFor((e) => e.length >= 1);
    const worker = await startTestWorker(env.config);
    try {
      await stream.waitFor((e) => e.length >= 4);
      stream.close();
      // The API process restarts: the client reconnects to the new one with Last-Event-ID.
      await first.kill('SIGTERM');
      const lastId = stream.events.at(-1)!.id;
      const secondPort = await freePort();
      const second = spawnApi({ ...env.env, PORT: String(secondPort) }, 'api-2');
      await second.ready;
      try {
        const resumed = await openSse(`http://127.0.0.1:${secondPort}/v1/audio/batches/${created.body.id}/events`, { ...(await auth()), 'Last-Event-ID': lastId });
        await resumed.ended;
        expect(resumed.events[0]!.event).not.toBe('snapshot');
        const all = [...stream.events.slice(1), ...resumed.events];
        // Exactly the logged events, each once, in order: nothing lost at the seam.
        const logged = await api.ctx.redis.xrange(`${env.prefix}:events:batch:${created.body.id}`, '-', '+');
        expect(all.map((e) => e.id)).toEqual(logged.map(([id]) => id));
        expect(all.at(-1)!.event).toBe('batch.completed');
      } finally {
        await second.kill();
      }
    } finally {
      await worker.close();
      await killAll([first]);
    }
  });

  it('accept a short-lived query token for EventSource, and refuse strangers', async () => {
    const created = await createBatch(api, body(1));
    const minted = await readJson(await api.request('/v1/stream-tokens', { method: 'POST' }));
    expect(minted.expires_in).toBe(300);
    const stream = await openSse(`${api.url}/v1/audio/batches/${created.body.id}/events?access_token=${minted.token}`);
    await stream.waitFor((e) => e.length >= 1);
    stream.close();
    const stranger = await fetch(`${api.url}/v1/audio/batches/${created.body.id}/events`, { headers: await auth('user-b') });
    expect(stranger.status).toBe(404);
    const anonymous = await fetch(`${api.url}/v1/audio/batches/${created.body.id}/events`);
    expect(anonymous.status).toBe(401);
    // The query token only works on event streams.
    expect((await fetch(`${api.url}/v1/audio/batches/${created.body.id}?access_token=${minted.token}`)).status).toBe(401);
    // As a bearer token too: a stream token opens a stream, and calls nothing else, so a token
    // that sits in URLs can neither read or change anything nor mint its own successor.
    const asBearer = { Authorization: `Bearer ${minted.token}` };
    const streamByHeader = await fetch(`${api.url}/v1/audio/batches/${created.body.id}/events`, { headers: asBearer });
    expect(streamByHeader.status).toBe(200);
    await streamByHeader.body?.cancel();
    const elsewhere = [
      await fetch(`${api.url}/v1/audio/batches/${created.body.id}`, { headers: asBearer }),
      await fetch(`${api.url}/v1/audio/variants`, { headers: asBearer }),
      await fetch(`${api.url}/v1/stream-tokens`, { method: 'POST', headers: asBearer }),
      await fetch(`${api.url}/v1/audio/batches/${created.body.id}/cancel`, { method: 'POST', headers: asBearer }),
    ];
    expect(elsewhere.map((r) => r.status)).toEqual([401, 401, 401, 401]);
    expect(((await elsewhere[0]!.json()) as { error: { message: string } }).error.message).toBe('a stream token is only good on an event stream (GET …/events)');
    // A user's own token still works everywhere as a bearer token (in the URL, only a stream
    // token is taken: tests/foundation/query-tokens.test.ts).
    expect((await api.request(`/v1/audio/batches/${created.body.id}`)).status).toBe(200);
  });
});

describe('book event streams', () => {
  it('show spreads advancing and end with book.ready', async () => {
    const created = await postBook(api, { title: 'Streamed', pages: ['The forest at dawn.', 'Birds in the trees.', 'The sea in a storm.', 'Waves on the deck.'] }, 'user-a');
    const stream = await openSse(`${api.url}/v1/books/${created.body.bookId}/events`, await auth());
    await stream.waitFor((e) => e.length >= 1);
    expect(stream.events[0]!.event).toBe('snapshot');
    const worker = await startTestWorker(env.config);
    try {
      await stream.ended;
    } finally {
      await worker.close();
    }
    const types = stream.events.map((e) => e.event);
    expect(stream.events[0]!.data.status).toBe('processing');
    expect(types.filter((t) => t === 'spread.updated')).toHaveLength(2);
    expect(types).toContain('soundscape.updated');
    expect(types.at(-1)).toBe('book.ready');
    expectOrdered(stream.events.slice(1).map((e) => e.id));
    // Its reconnect has missed nothing: 204. So has one from a stream opened after the end.
    const url = `${api.url}/v1/books/${created.body.bookId}/events`;
    expect((await fetch(url, { headers: { ...(await auth()), 'Last-Event-ID': stream.events.at(-1)!.id } })).status).toBe(204);
    const late = await openSse(url, await auth());
    await late.ended;
    expect(late.events.map((e) => [e.event, e.id, e.data.status])).toEqual([['snapshot', 'end-1', 'ready']]);
    expect((await fetch(`${url}?lastEventId=end-1`, { headers: await auth() })).status).toBe(204);
    // A HEAD answers what the GET would: 204 for those, 200 for a fresh start.
    expect((await fetch(url, { method: 'HEAD', headers: { ...(await auth()), 'Last-Event-ID': stream.events.at(-1)!.id } })).status).toBe(204);
    expect((await fetch(`${url}?lastEventId=end-1`, { method: 'HEAD', headers: await auth() })).status).toBe(204);
    expect((await fetch(url, { method: 'HEAD', headers: await auth() })).status).toBe(200);
  });
});
