import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublisher } from '@soundqueue/shared/events';
import { startTestApi, startTestWorker, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { refusingSpeech } from '../helpers/providers';
import { openSse, type SseEvent } from '../helpers/sse';

// A client that has the end of a stream, reconnecting (EventSource does so ~2 s after every
// stream that closes, with Last-Event-ID): 204, which stops EventSource for good. Before, it
// got the final snapshot again and the end, and reconnected every 2 s for ever. A client that
// has not got the end still gets what it missed. Workers run only where a test starts one.
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ SSE_HEARTBEAT_MS: '200', SPEECH_PROVIDER: 'local' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const auth = async () => ({ Authorization: `Bearer ${await tokenFor('user-a')}` });
const newBatch = async () => {
  const created = await createBatch(api, { visionId: 'end', sections: sampleSections(1, 'End'), variants: ['voice_only'], voice: 'alloy' });
  expect(created.status).toBe(201);
  return created.body.id as string;
};
const url = (batchId: string) => `${api.url}/v1/audio/batches/${batchId}/events`;
/** A reconnect as EventSource makes it (the header), or as the status page does (the query). */
const resume = async (batchId: string, id: string, via: 'header' | 'query' = 'header') =>
  via === 'header'
    ? fetch(url(batchId), { headers: { ...(await auth()), 'Last-Event-ID': id } })
    : fetch(`${url(batchId)}?lastEventId=${encodeURIComponent(id)}`, { headers: await auth() });
async function expectNothingLeft(batchId: string, id: string) {
  for (const via of ['header', 'query'] as const) {
    const res = await resume(batchId, id, via);
    expect(res.status, `${via} ${id}`).toBe(204);
    expect(await res.text()).toBe('');
    expect(res.headers.get('content-type')).toBeNull();
  }
}
/** The id of the newest event in a batch's log. */
const newestLogged = async (batchId: string) => (await api.ctx.redis.xrevrange(`${env.prefix}:events:batch:${batchId}`, '+', '-', 'COUNT', 1))[0]![0];
/** Every event of a stream that ends by itself. */
async function wholeStream(batchId: string, headers: Record<string, string> = {}): Promise<SseEvent[]> {
  const stream = await openSse(url(batchId), { ...(await auth()), ...headers });
  await stream.ended;
  return stream.events;
}

describe('a stream that has ended', () => {
  it('answers 204 to a resume that has the end, and the rest to one that has not', async () => {
    const batchId = await newBatch();
    const stream = await openSse(url(batchId), await auth());
    await stream.waitFor((e) => e.length >= 1);
    // Cancelled while nothing runs, the batch ends at once: the stream gets batch.cancelled and ends.
    expect((await api.request(`/v1/audio/batches/${batchId}/cancel`, { method: 'POST' })).status).toBe(202);
    await stream.ended;
    const changes = stream.events.slice(1);
    expect(changes.at(-1)!.event).toBe('batch.cancelled');
    expect(changes.length).toBeGreaterThanOrEqual(2);

    // Resuming from the terminal event: nothing was missed.
    await expectNothingLeft(batchId, changes.at(-1)!.id);
    // Resuming from before it: the missed events, the terminal one last, then the end.
    const rest = await wholeStream(batchId, { 'Last-Event-ID': changes[0]!.id });
    expect(rest.map((e) => e.id)).toEqual(changes.slice(1).map((e) => e.id));
    // Its own reconnect: 204.
    await expectNothingLeft(batchId, rest.at(-1)!.id);

    // Opened after the end: the final snapshot, whose id a resume knows as "has the end".
    const late = await wholeStream(batchId);
    expect(late.map((e) => [e.event, e.id, e.data.status])).toEqual([['snapshot', 'end-1', 'cancelled']]);
    await expectNothingLeft(batchId, 'end-1');
    // An id this API never sent is no claim to have the end: the final snapshot.
    for (const odd of ['end-2', 'end-', 'end-1x', 'whatever']) {
      expect((await wholeStream(batchId, { 'Last-Event-ID': odd })).map((e) => [e.event, e.id]), odd).toEqual([['snapshot', 'end-1']]);
    }
  });

  it('sends the final snapshot once, then 204, after the log has expired', async () => {
    const batchId = await newBatch();
    const stream = await openSse(url(batchId), await auth());
    await stream.waitFor((e) => e.length >= 1);
    expect((await api.request(`/v1/audio/batches/${batchId}/cancel`, { method: 'POST' })).status).toBe(202);
    await stream.ended;
    const midway = stream.events[1]!.id;
    // The log's EXPIRE (EVENT_LOG_FINISHED_TTL_SECONDS after the end) has run.
    expect(await api.ctx.redis.del(`${env.prefix}:events:batch:${batchId}`)).toBe(1);
    for (const id of [midway, stream.events.at(-1)!.id]) {
      expect((await wholeStream(batchId, { 'Last-Event-ID': id })).map((e) => [e.event, e.id, e.data.status]), id).toEqual([['snapshot', 'end-1', 'cancelled']]);
    }
    await expectNothingLeft(batchId, 'end-1');
  });

  it('sends the final snapshot, then 204, when the subject finished without its terminal event in the log', async () => {
    // A terminal event Redis refused (publishing is best effort), or one not published yet:
    // the row says finished, the log's newest event does not. Nothing is missing from the
    // log after the client's id, yet the client has not seen the end.
    const batchId = await newBatch();
    const publish = createPublisher(api.ctx.redis, env.prefix);
    await publish([{ subject: { kind: 'batch', id: batchId }, type: 'batch.updated', data: { status: 'processing' } }]);
    const lastLogged = await newestLogged(batchId);
    await queryRows(env.databaseUrl, `update audio_generation_batches set status = 'failed', completed_at = now(), error_message = 'ended unannounced' where id = $1`, [batchId]);
    const events = await wholeStream(batchId, { 'Last-Event-ID': lastLogged });
    expect(events.map((e) => [e.event, e.id, e.data.status])).toEqual([['snapshot', 'end-1', 'failed']]);
    await expectNothingLeft(batchId, 'end-1');
  });

  it('does not stop a client whose end is a run the batch has been retried past', async () => {
    const failing = refusingSpeech(env.config);
    const batchId = await newBatch();
    let worker = await startTestWorker(env.config, { providers: failing });
    try {
      expect((await waitForTerminal(api, batchId)).status).toBe('failed');
    } finally {
      await worker.close();
    }
    const firstEnd = await newestLogged(batchId);
    const late = await wholeStream(batchId);
    expect(late.map((e) => [e.id, e.data.status, e.data.run])).toEqual([['end-1', 'failed', 1]]);
    await expectNothingLeft(batchId, 'end-1');
    await expectNothingLeft(batchId, firstEnd);

    // Retried: processing again (no worker runs yet). Neither end stops the client now.
    expect((await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST' })).status).toBe(202);
    const fresh = await openSse(url(batchId), { ...(await auth()), 'Last-Event-ID': 'end-1' });
    try {
      await fresh.waitFor((e) => e.length >= 1);
      expect(fresh.events[0]).toMatchObject({ event: 'snapshot', data: { status: 'processing', run: 2 } });
      expect(fresh.events[0]!.id).toMatch(/^\d+-\d+$/);
    } finally {
      fresh.close();
    }
    const replayed = await openSse(url(batchId), { ...(await auth()), 'Last-Event-ID': firstEnd });
    try {
      // The retry's change of each track is an event too: failed to pending, error cleared.
      const events = await replayed.waitFor((e) => e.some((x) => x.event === 'track.updated' && x.data.status === 'pending'));
      const retried = events.findIndex((x) => x.event === 'batch.retried');
      expect(retried).toBeGreaterThanOrEqual(0);
      expect(events.slice(retried + 1).map((x) => [x.event, x.data.status, x.data.errorType, x.data.errorMessage])).toEqual([
        ['track.updated', 'pending', null, null],
      ]);
    } finally {
      replayed.close();
    }

    // The retry ends too (failed again): the end of run 1 is not this end.
    worker = await startTestWorker(env.config, { providers: failing });
    try {
      await waitForTerminal(api, batchId);
    } finally {
      await worker.close();
    }
    expect((await wholeStream(batchId, { 'Last-Event-ID': 'end-1' })).map((e) => [e.id, e.data.status, e.data.run])).toEqual([['end-2', 'failed', 2]]);
    await expectNothingLeft(batchId, 'end-2');
  });
});
