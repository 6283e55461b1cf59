import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProgressEvent } from '@soundqueue/shared/events';
import { claimSpread, completeSpread } from '@soundqueue/shared/rollup/books';
import { finaliseBatch, finishTrack, startTrack } from '@soundqueue/shared/rollup/tracks';
import { readJson, startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { postBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { openSse, type SseEvent } from '../helpers/sse';

// Progress events carry the state their transition committed, and are published after the
// commit: two workers that commit track A then track B can publish B's events first. No
// worker runs here: the test makes the transitions with the real rollup functions and
// publishes their events through the API's real notifier, in the order it chooses.
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ SSE_HEARTBEAT_MS: '200' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const auth = async (user = 'user-a') => ({ Authorization: `Bearer ${await tokenFor(user)}` });
const completed = { status: 'completed', mixedFileKey: 'k', mixedBytes: 1, durationMs: 1000 } as const;
const versionOf = (events: ProgressEvent[], type: string, trackId?: string) =>
  events.find((e) => e.type === type && (trackId === undefined || e.data.trackId === trackId))!.data.version as number;
/** What a stream showed after its snapshot: [event, track's status or batch's completed count]. */
const shown = (events: SseEvent[], trackName: Record<string, string>) =>
  events.slice(1).map((e) => (e.data.trackId ? [e.event, trackName[e.data.trackId], e.data.status] : [e.event, e.data.tracksCompleted]));

async function newBatch() {
  const created = await createBatch(api, { visionId: 'versions', sections: sampleSections(2, 'Versions'), variants: ['voice_only'], voice: 'alloy' });
  expect(created.status).toBe(201);
  const batchId = created.body.id as string;
  const tracks = await queryRows<{ id: string; section_index: number }>(env.databaseUrl, 'select id, section_index from audio_tracks where batch_id = $1 order by section_index', [batchId]);
  return { batchId, a: tracks[0]!.id, b: tracks[1]!.id };
}

describe('row versions', () => {
  it('rise with every change of a batch, track or book row, and come with the views, the snapshots and the events', async () => {
    const { batchId, a, b } = await newBatch();
    const rows = async () => {
      const [batch] = await queryRows(env.databaseUrl, 'select version::int from audio_generation_batches where id = $1', [batchId]);
      const tracks = await queryRows(env.databaseUrl, 'select id, version::int from audio_tracks where batch_id = $1', [batchId]);
      const track = (id: string) => tracks.find((t) => t.id === id)!.version as number;
      return { batch: batch.version as number, a: track(a), b: track(b) };
    };
    const created = await rows();
    const view = await readJson(await api.request(`/v1/audio/batches/${batchId}`));
    expect(view.version).toBe(created.batch);
    expect(Object.fromEntries(view.tracks.map((t: any) => [t.id === a ? 'a' : 'b', t.version]))).toEqual({ a: created.a, b: created.b });

    const started = await startTrack(api.ctx.db, a);
    expect(started.started).toBe(true);
    const afterStart = await rows();
    expect(afterStart).toEqual({ batch: created.batch + 1, a: created.a + 1, b: created.b });
    expect(versionOf(started.events, 'track.updated', a)).toBe(afterStart.a);
    expect(versionOf(started.events, 'batch.updated')).toBe(afterStart.batch);

    // A change no event reports (the voice's cost) still moves the version.
    await api.ctx.db.execute(sql`update audio_generation_batches set cost_usd = cost_usd + 1 where id = ${batchId}`);
    expect((await rows()).batch).toBe(afterStart.batch + 1);

    const [endpoint] = await queryRows(env.databaseUrl, `insert into webhook_endpoints (user_id, url, events, secret) values ('user-a', 'https://hooks.example/x', '["batch.partial_success"]', 'whsec_x') returning id`);
    const failed = await finishTrack(api.ctx.db, b, { status: 'failed', errorType: 'SpeechGenerationError', errorMessage: 'no' });
    const finished = await finishTrack(api.ctx.db, a, completed);
    const done = await finaliseBatch(api.ctx.db, batchId);
    const final = await rows();
    expect(final).toEqual({ batch: afterStart.batch + 4, a: afterStart.a + 1, b: afterStart.b + 1 });
    expect(versionOf(failed.events, 'track.failed', b)).toBe(final.b);
    expect(versionOf(failed.events, 'batch.updated')).toBe(afterStart.batch + 2);
    expect(versionOf(finished.events, 'track.updated', a)).toBe(final.a);
    expect(versionOf(done.events, 'batch.partial_success')).toBe(final.batch);

    // Webhooks carry it too: a receiver cannot rely on delivery order either. (Recorded as
    // the batch was finalised, for the endpoint subscribed then.)
    await api.ctx.publish(done.events);
    const [delivery] = await queryRows(env.databaseUrl, 'select payload from webhook_deliveries where endpoint_id = $1', [endpoint.id]);
    expect(delivery.payload.data).toMatchObject({ batch_id: batchId, version: final.batch, status: 'partial_success' });

    const snapshot = await openSse(`${api.url}/v1/audio/batches/${batchId}/events`, await auth());
    await snapshot.ended;
    expect(snapshot.events[0]!.data.version).toBe(final.batch);
    expect(snapshot.events[0]!.data.tracks.map((t: any) => t.version).sort()).toEqual([final.a, final.b].sort());

    // Books the same way.
    const book = await postBook(api, { title: 'Versions', pages: ['The forest.', 'Trees.', 'The sea.', 'Waves.'] }, 'user-a');
    const bookId = book.body.bookId as string;
    const bookVersion = async () => (await queryRows(env.databaseUrl, 'select version::int from books where id = $1', [bookId]))[0].version as number;
    const before = await bookVersion();
    expect((await readJson(await api.request(`/v1/books/${bookId}`))).version).toBe(before);
    const analysis = { sceneChanged: false, setting: 'forest', timeOfDay: 'day', mood: 'calm', ambience: ['birds'], confidence: 0.9 };
    // As a spread job records it: under its claim (which changes the spread's row only).
    const claimed = await claimSpread(api.ctx.db, bookId, 0, 1, 30_000);
    if (typeof claimed === 'string') throw new Error(`spread not claimed: ${claimed}`);
    const spread = (await completeSpread(api.ctx.db, bookId, 0, claimed.claim, { analysis, costUsd: 0, durationMs: 1 }))!;
    expect(await bookVersion()).toBe(before + 1);
    expect(versionOf(spread, 'book.updated')).toBe(before + 1);
    const bookStream = await openSse(`${api.url}/v1/books/${bookId}/events`, await auth());
    try {
      await bookStream.waitFor((e) => e.length >= 1);
      expect(bookStream.events[0]!.data.version).toBe(before + 1);
    } finally {
      bookStream.close();
    }
  });
});

describe('event streams', () => {
  it('never show a batch or a track older than a state they showed, whatever order the events were published in, live or replayed', async () => {
    const { batchId, a, b } = await newBatch();
    const name = { [a]: 'A', [b]: 'B' };
    const url = `${api.url}/v1/audio/batches/${batchId}/events`;
    const early = await openSse(url, await auth());
    await early.waitFor((e) => e.length >= 1);

    // Committed in this order: A starts (the batch starts processing), B starts, A completes
    // (1 completed), B completes (2 completed).
    const startA = (await startTrack(api.ctx.db, a)).events;
    const startB = (await startTrack(api.ctx.db, b)).events;
    const doneA = (await finishTrack(api.ctx.db, a, completed)).events;
    const doneB = (await finishTrack(api.ctx.db, b, completed)).events;
    // A stream opened now has every commit in its snapshot.
    const late = await openSse(url, await auth());
    await late.waitFor((e) => e.length >= 1);
    expect(late.events[0]!.data).toMatchObject({ status: 'processing', tracks_completed: 2 });

    // Published in another order: B's completion first, then A's start, A's completion, B's start.
    for (const events of [doneB, startA, doneA, startB]) await api.ctx.publish(events);
    const final = await finaliseBatch(api.ctx.db, batchId);
    await api.ctx.publish(final.events);
    await early.ended;
    await late.ended;

    // Before: [B completed, 2], then A generating, [batch.updated 0] (processing), A
    // completed, [batch.updated 1], B generating: counters and a track going backwards.
    expect(shown(early.events, name)).toEqual([
      ['track.updated', 'B', 'completed'],
      ['batch.updated', 2],
      ['track.updated', 'A', 'generating'], // newer than the A of the snapshot (pending)
      ['track.updated', 'A', 'completed'],
      ['batch.updated', 2],
      ['batch.completed', 2],
    ]);
    // The late stream's snapshot already had A completed: A's start is older than it.
    expect(shown(late.events, name)).toEqual([
      ['track.updated', 'B', 'completed'],
      ['batch.updated', 2],
      ['track.updated', 'A', 'completed'],
      ['batch.updated', 2],
      ['batch.completed', 2],
    ]);

    // The log holds the events as published; a client that saw the batch at 2 completed and
    // reconnects is not shown the older states that follow in the log either.
    const sawTwo = early.events.find((e) => e.event === 'batch.updated')!.id;
    const resumed = await openSse(url, { ...(await auth()), 'Last-Event-ID': sawTwo });
    await resumed.ended;
    expect(shown([{ id: '', event: 'resume', data: {} }, ...resumed.events], name)).toEqual([
      ['track.updated', 'A', 'generating'],
      ['track.updated', 'A', 'completed'],
      ['batch.updated', 2],
      ['batch.completed', 2],
    ]);
  });

  it('send a dropped event as its id alone, so a reconnect resumes after it instead of replaying it', async () => {
    const { batchId, a } = await newBatch();
    const startA = (await startTrack(api.ctx.db, a)).events;
    const doneA = (await finishTrack(api.ctx.db, a, completed)).events;
    const res = await fetch(`${api.url}/v1/audio/batches/${batchId}/events`, { headers: await auth() });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    const readUntil = async (what: string) => {
      while (!text.includes(what)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`stream ended before ${JSON.stringify(what)}; got ${text}`);
        text += value;
      }
    };
    try {
      await readUntil('event: snapshot');
      // The snapshot has A completed; A's start, published last, is older than it.
      await api.ctx.publish([...doneA, ...startA]);
      const [[newest]] = (await api.ctx.redis.xrevrange(`${env.prefix}:events:batch:${batchId}`, '+', '-', 'COUNT', 1)) as [[string, string[]]];
      await readUntil(`id: ${newest}\n\n`); // an SSE block with no data: EventSource dispatches nothing
      expect(text).toContain('"status":"completed"');
      expect(text).not.toContain('"status":"generating"');
    } finally {
      await reader.cancel();
    }
  }, 30_000); // not the suite's 5 minutes: a stream that never sends the id waits for ever
});
