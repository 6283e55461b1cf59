import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublisher, eventLogKey, type ProgressEvent, type Subject } from '@soundqueue/shared/events';
import { claimSpread, failSpread, finaliseBook } from '@soundqueue/shared/rollup/books';
import { finaliseBatch, finishTrack } from '@soundqueue/shared/rollup/tracks';
import { startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { postBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { openSse } from '../helpers/sse';

// A batch's or book's event log is kept a day while its work runs and minutes after its
// terminal event (EVENT_LOG_FINISHED_TTL_SECONDS). Events still come after the end: a worker
// that committed a track before the batch finished may publish it after the terminal event.
// Before, such a late event gave the finished log a day again. No worker runs: the test
// publishes events itself, or makes the transitions with the real rollup functions.
const OPEN = 86_400;
const FINISHED = 300;
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ EVENT_LOG_TTL_SECONDS: String(OPEN), EVENT_LOG_FINISHED_TTL_SECONDS: String(FINISHED) });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const ttlOf = (subject: Subject) => api.ctx.redis.ttl(eventLogKey(env.prefix, subject));
const event = (subject: Subject, type: string, extra: Partial<ProgressEvent> = {}): ProgressEvent => ({ subject, type, data: { n: 1 }, ...extra });

describe('an event log', () => {
  it('keeps its short expiry after the terminal event, whatever comes late, until a new run reopens it', async () => {
    const publish = createPublisher(api.ctx.redis, env.prefix, undefined, { openSeconds: OPEN, finishedSeconds: FINISHED });
    const subject: Subject = { kind: 'batch', id: randomUUID() };
    await publish([event(subject, 'track.updated')]);
    expect(await ttlOf(subject)).toBeGreaterThan(FINISHED);
    await publish([event(subject, 'track.updated'), event(subject, 'batch.completed', { terminal: true })]);
    expect(await ttlOf(subject)).toBeLessThanOrEqual(FINISHED);

    // Committed before the end, published after it: the log stays on its short expiry.
    await publish([event(subject, 'track.updated')]);
    await publish([event(subject, 'track.updated'), event(subject, 'batch.updated')]);
    // Before: 86400.
    expect(await ttlOf(subject)).toBeLessThanOrEqual(FINISHED);
    expect(await api.ctx.redis.xlen(eventLogKey(env.prefix, subject))).toBe(6); // all of them logged

    // A retry starts a new run: its log is an open one's again, and stays so with the run's events.
    await publish([event(subject, 'batch.retried', { reopens: true }), event(subject, 'track.updated')]);
    expect(await ttlOf(subject)).toBeGreaterThan(FINISHED);
    await publish([event(subject, 'track.updated')]);
    expect(await ttlOf(subject)).toBeGreaterThan(FINISHED);
    await publish([event(subject, 'batch.failed', { terminal: true })]);
    expect(await ttlOf(subject)).toBeLessThanOrEqual(FINISHED);
    await publish([event(subject, 'track.updated')]);
    expect(await ttlOf(subject)).toBeLessThanOrEqual(FINISHED);
  });

  it('is reopened by a batch’s retry and by a book’s restart', async () => {
    const created = await createBatch(api, { visionId: 'expiry', sections: sampleSections(1, 'Expiry'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batch: Subject = { kind: 'batch', id: created.body.id as string };
    const [track] = await queryRows<{ id: string }>(env.databaseUrl, 'select id from audio_tracks where batch_id = $1', [batch.id]);
    const failed = await finishTrack(api.ctx.db, track!.id, { status: 'failed', errorType: 'SpeechGenerationError', errorMessage: 'refused' });
    const ended = await finaliseBatch(api.ctx.db, batch.id);
    await api.ctx.publish([...failed.events, ...ended.events]);
    expect(await ttlOf(batch)).toBeLessThanOrEqual(FINISHED);
    expect((await api.request(`/v1/audio/batches/${batch.id}/retry`, { method: 'POST' })).status).toBe(202);
    expect(await ttlOf(batch)).toBeGreaterThan(FINISHED);

    const posted = await postBook(api, { title: 'Expiry', pages: ['a dark forest', 'the forest again'] });
    expect(posted.status).toBe(202);
    const book: Subject = { kind: 'book', id: posted.body.bookId as string };
    // As a spread job records it: under its claim.
    const claimed = await claimSpread(api.ctx.db, book.id, 0, 1, 30_000);
    if (typeof claimed === 'string') throw new Error(`spread not claimed: ${claimed}`);
    const spreadFailed = (await failSpread(api.ctx.db, book.id, 0, claimed.claim, { errorType: 'ContentAnalysisError', message: 'refused', stack: null, attempt: 1 }))!;
    const bookEnded = await finaliseBook(api.ctx.db, book.id, {});
    expect(bookEnded.status).toBe('failed');
    await api.ctx.publish([...spreadFailed, ...bookEnded.events]);
    expect(await ttlOf(book)).toBeLessThanOrEqual(FINISHED);
    expect((await api.request(`/v1/books/${book.id}/soundscapes`, { method: 'POST', user: 'reader' })).status).toBe(202);
    // The restart is a change of the book like any other: an event, with the new run's state.
    // Before, a restart published nothing, and the log stayed on the end's expiry.
    const [[, fields]] = (await api.ctx.redis.xrevrange(eventLogKey(env.prefix, book), '+', '-', 'COUNT', 1)) as [[string, string[]]];
    expect(JSON.parse(fields[1]!)).toMatchObject({ type: 'book.updated', data: { status: 'processing', run: 2 }, terminal: false });
    expect(await ttlOf(book)).toBeGreaterThan(FINISHED);
  });
});

// Run 1's terminal event committed before the retry but published after the retry's
// batch.retried (its worker slow between commit and publish). Its version is lower than the
// retry's, so it is stale: before, it put the running batch's log on the finished expiry and
// set the ended marker, so run 2's log could expire within minutes (a reconnecting client
// then got a snapshot instead of its missed events, and an open stream whose events
// subscriber reconnected ended, the log no longer reaching back), and, as the log's newest
// entry, it answered a resume from its id with 204 once run 2 had ended before its own
// terminal event was logged. It is now neither logged nor announced.
describe('a terminal event published after a retry reopened the log', () => {
  const auth = async () => ({ Authorization: `Bearer ${await tokenFor('user-a')}` });
  const eventsUrl = (batchId: string) => `${api.url}/v1/audio/batches/${batchId}/events`;
  const newestLogged = async (batch: Subject) => (await api.ctx.redis.xrevrange(eventLogKey(env.prefix, batch), '+', '-', 'COUNT', 1))[0]![0];

  /** A new one-track batch, and its track. */
  async function oneTrackBatch() {
    const created = await createBatch(api, { visionId: 'stale-end', sections: sampleSections(1, 'Stale'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batch: Subject = { kind: 'batch', id: created.body.id as string };
    const [track] = await queryRows<{ id: string }>(env.databaseUrl, 'select id from audio_tracks where batch_id = $1', [batch.id]);
    return { batch, trackId: track!.id };
  }
  /** Ends the batch's run in the database (its track failed) and returns the events, unpublished. */
  async function endRun(batch: Subject, trackId: string): Promise<ProgressEvent[]> {
    const failed = await finishTrack(api.ctx.db, trackId, { status: 'failed', errorType: 'SpeechGenerationError', errorMessage: 'refused' });
    const ended = await finaliseBatch(api.ctx.db, batch.id);
    expect(ended.status).toBe('failed');
    return [...failed.events, ...ended.events];
  }
  const retry = async (batch: Subject) => expect((await api.request(`/v1/audio/batches/${batch.id}/retry`, { method: 'POST' })).status).toBe(202);

  it('leaves the running log open and an open stream going', async () => {
    const { batch, trackId } = await oneTrackBatch();
    const stream = await openSse(eventsUrl(batch.id), await auth());
    await stream.waitFor((events) => events.length >= 1);
    const runOneEnd = await endRun(batch, trackId);
    await retry(batch);
    await stream.waitFor((events) => events.some((e) => e.event === 'batch.retried'));
    const logged = await api.ctx.redis.xlen(eventLogKey(env.prefix, batch));

    await api.ctx.publish(runOneEnd);
    // Before: the finished expiry (300) and the ended marker.
    expect(await ttlOf(batch)).toBeGreaterThan(FINISHED);
    expect(await api.ctx.redis.exists(`${eventLogKey(env.prefix, batch)}:ended`)).toBe(0);
    // Its track and counters events are logged (a stream drops them by their versions); the
    // stale terminal event is not.
    expect(await api.ctx.redis.xlen(eventLogKey(env.prefix, batch))).toBe(logged + runOneEnd.length - 1);
    const [[, fields]] = (await api.ctx.redis.xrevrange(eventLogKey(env.prefix, batch), '+', '-', 'COUNT', 1)) as [[string, string[]]];
    expect(JSON.parse(fields[1]!)).toMatchObject({ type: 'batch.updated', terminal: false });

    // Run 2 goes on: its next change reaches the open stream, which run 1's end did not end.
    const runTwoTrack = await finishTrack(api.ctx.db, trackId, { status: 'failed', errorType: 'SpeechGenerationError', errorMessage: 'refused again' });
    await api.ctx.publish(runTwoTrack.events);
    await stream.waitFor((events) => events.some((e) => e.event === 'track.updated' && e.data.errorMessage === 'refused again'));
    expect(stream.events.map((e) => e.event)).not.toContain('batch.failed');
    expect(await ttlOf(batch)).toBeGreaterThan(FINISHED);
    stream.close();
  });

  it('does not answer 204 to a resume from after it when run 2 has ended since', async () => {
    const { batch, trackId } = await oneTrackBatch();
    const runOneEnd = await endRun(batch, trackId);
    await retry(batch);
    await api.ctx.publish(runOneEnd);
    // What a stream open through it last gave its client (before: the stale terminal event's id).
    const lastSeen = await newestLogged(batch);
    // Run 2 ends too, its own terminal event not logged yet.
    const runTwoEnd = await endRun(batch, trackId);
    expect(runTwoEnd.some((e) => e.terminal)).toBe(true);

    // Before: 204, and the client stopped without run 2's end.
    const stream = await openSse(eventsUrl(batch.id), { ...(await auth()), 'Last-Event-ID': lastSeen });
    await stream.ended;
    expect(stream.events.map((e) => [e.event, e.id, e.data.status, e.data.run])).toEqual([['snapshot', 'end-2', 'failed', 2]]);
  });
});
