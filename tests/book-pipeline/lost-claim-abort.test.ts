import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobId } from '@soundqueue/shared/queues';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { endedJob, expectBookCountsMatchRows, postBook, restartBook, timeOutBookRun, waitForBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { readingGeminiAnswer, startGeminiServer, type GeminiFake } from '../fakes/gemini-server';
import { fakeProviderEnv } from '../fakes/provider-env';
import { providerCallDuration } from '../../apps/worker/src/metrics';
import { startReplicateServer, type ReplicateFake } from '../fakes/replicate-server';

// A spread-analysis or soundscape job whose claim is taken from it while its provider call is
// in flight (here: the reconciler's timeout stops its run and the book is started again).
// Before, the job waited for the provider's answer, and paid for it, although it could record
// nothing. Now the renewal that finds the claim gone aborts the call: the real SDKs drop the
// request (the fakes see the client leave) and Replicate's prediction is cancelled. A renewal
// the database refuses says nothing about the claim, and stops nothing.

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let gemini: GeminiFake;
let replicate: ReplicateFake;

beforeAll(async () => {
  gemini = await startGeminiServer({ answer: readingGeminiAnswer });
  replicate = await startReplicateServer();
  env = await createTestEnv({
    ...fakeProviderEnv({ gemini, replicate }),
    REPLICATE_POLL_INTERVAL_MS: '50',
    SOUNDSCAPE_SECONDS: '2',
    // Only a lost claim ends a held call within the test's waits, not the provider's deadline.
    PROVIDER_TIMEOUT_MS: '120000',
    // Claims renewed every 1.3 s.
    WORKER_LOCK_DURATION_MS: '4000',
  });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
  await gemini?.close();
  await replicate?.close();
});

/** The book's provider calls of one kind, errors first (an aborted call is recorded once its job ends). */
function providerCalls(bookId: string, kind: 'analysis' | 'soundscape') {
  return queryRows(env.databaseUrl, 'select outcome, cost_usd::float as cost from provider_calls where book_id = $1 and kind = $2 order by outcome', [bookId, kind]);
}

/** How many provider calls of `kind` this process's workers timed with `outcome` (soundqueue_provider_call_duration_seconds). */
async function timedCalls(kind: 'analysis' | 'soundscape', outcome: string): Promise<number> {
  const { values } = await providerCallDuration.get();
  return values
    .filter((v) => v.metricName === 'soundqueue_provider_call_duration_seconds_count' && v.labels.kind === kind && v.labels.outcome === outcome)
    .reduce((sum, v) => sum + v.value, 0);
}

/** A renewal's wait plus room for a loaded machine; the provider's deadline is far later. */
const ABORTED_WITHIN_MS = 30_000;

describe('a job whose claim is taken while its provider call is in flight', () => {
  it('an analysis call is aborted, and the job ends without writing', async () => {
    const before = gemini.requests.length;
    gemini.script(['hang']);
    const created = await postBook(api, { title: 'Sea', pages: ['the stormy sea', 'waves on the sea'] });
    const bookId = created.body.bookId as string;
    const call = await waitFor(() => gemini.requests[before], { what: 'the analysis call' });
    await timeOutBookRun(worker, env.databaseUrl, bookId);
    await restartBook(api, bookId);

    await waitFor(() => call.gone.aborted || null, { what: 'the old run\'s analysis call to be aborted', timeoutMs: ABORTED_WITHIN_MS });
    const oldJob = await endedJob(worker, 'book-analyze', jobId.bookAnalyze(bookId, 0, 1));
    expect(oldJob.failedReason).toBeUndefined();
    expect(oldJob.returnvalue).toMatchObject({ skipped: expect.stringMatching(/run 1 no longer holds the spread/) });

    // The new run analyses the spread; the aborted call is recorded, as every call is, as
    // aborted: the provider did not fail.
    const book = await waitForBook(api, bookId);
    expect(book).toMatchObject({ status: 'ready', stats: { processedSpreads: 1 } });
    expect(book.errors ?? []).toEqual([]);
    expect(await providerCalls(bookId, 'analysis')).toEqual([{ outcome: 'aborted', cost: 0 }, { outcome: 'ok', cost: expect.any(Number) }]);
    expect(await timedCalls('analysis', 'aborted')).toBe(1);
    expect(await timedCalls('analysis', 'error')).toBe(0);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });

  it('a soundscape\'s prediction is cancelled, and the job ends without writing or storing', async () => {
    const before = replicate.requests.length;
    // The prediction is created; its first poll hangs, so the job waits on it.
    replicate.script(['ok', 'hang']);
    const created = await postBook(api, { title: 'Forest', pages: ['a dark forest at night', 'the forest again'] });
    const bookId = created.body.bookId as string;
    const poll = await waitFor(() => replicate.requests.slice(before).find((r) => r.method === 'GET'), { what: 'the prediction polled' });
    const predictionId = poll.path.split('/').pop();
    const [sound] = await queryRows(env.databaseUrl, 'select id from soundscapes where book_id = $1', [bookId]);
    await timeOutBookRun(worker, env.databaseUrl, bookId);
    await restartBook(api, bookId);

    await waitFor(() => poll.gone.aborted || null, { what: 'the old run\'s poll to be aborted', timeoutMs: ABORTED_WITHIN_MS });
    await waitFor(() => replicate.requests.find((r) => r.method === 'POST' && r.path === `/v1/predictions/${predictionId}/cancel`), { what: 'the prediction cancelled' });
    const oldJob = await endedJob(worker, 'soundscape', jobId.soundscape(sound.id, 1));
    expect(oldJob.failedReason).toBeUndefined();
    expect(oldJob.returnvalue).toMatchObject({ skipped: expect.stringMatching(/run 1 no longer holds the soundscape/) });

    const book = await waitForBook(api, bookId);
    expect(book).toMatchObject({ status: 'ready', stats: { soundscapesGenerated: 1 } });
    expect(book.warning).toBeUndefined();
    // The cancelled prediction is recorded at the run time Replicate billed for it.
    const cancelled = replicate.predictions.find((p) => p.id === predictionId)!;
    expect(await providerCalls(bookId, 'soundscape')).toEqual([
      { outcome: 'aborted', cost: expect.closeTo(cancelled.predictTime! * env.config.PRICE_REPLICATE_PER_SECOND, 6) },
      { outcome: 'ok', cost: expect.any(Number) },
    ]);
    expect(cancelled.predictTime).toBeGreaterThan(0);
    expect(await timedCalls('soundscape', 'aborted')).toBe(1);
    expect(await timedCalls('soundscape', 'error')).toBe(0);
    // Only the new run's file is stored.
    const [made] = await queryRows(env.databaseUrl, 'select file_key from soundscapes where id = $1', [sound.id]);
    expect(await readdir(join(env.config.STORAGE_DIR, 'soundscapes', bookId))).toEqual([made.file_key.split('/').pop()]);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });

  it('a renewal the database refuses stops nothing: the call goes on and its result counts', async () => {
    const before = gemini.requests.length;
    let answer!: () => void;
    gemini.script([{ kind: 'held', until: new Promise<void>((resolve) => (answer = resolve)) }]);
    const created = await postBook(api, { title: 'Harbour', pages: ['the ship in the harbour', 'the sea beyond the harbour'] });
    const bookId = created.body.bookId as string;
    const call = await waitFor(() => gemini.requests[before], { what: 'the analysis call' });
    // Every update of the spread's row refused (counted outside the refused transaction).
    await queryRows(env.databaseUrl, 'create sequence refused_renewals');
    await queryRows(env.databaseUrl, `create function refuse_renewal() returns trigger language plpgsql as $$ begin perform nextval('refused_renewals'); raise exception 'this row refuses updates'; end $$`);
    await queryRows(env.databaseUrl, `create trigger refuse_renewal before update on book_spreads for each row when (old.book_id = '${bookId}') execute function refuse_renewal()`);
    await waitFor(async () => {
      const [seq] = await queryRows(env.databaseUrl, 'select last_value::int as n, is_called from refused_renewals');
      return seq.is_called && seq.n >= 2;
    }, { what: 'two renewals refused' });
    await queryRows(env.databaseUrl, 'drop trigger refuse_renewal on book_spreads');

    expect(call.gone.aborted).toBe(false);
    answer();
    const book = await waitForBook(api, bookId);
    expect(book).toMatchObject({ status: 'ready', stats: { processedSpreads: 1 } });
    expect(gemini.requests.length - before).toBe(1);
    expect(await providerCalls(bookId, 'analysis')).toEqual([{ outcome: 'ok', cost: expect.any(Number) }]);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });
});
