import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SoundscapeGenerationError } from '@soundqueue/shared/errors';
import { soundscapeWith } from '../helpers/providers';
import { reconcile } from '../../apps/worker/src/reconciler';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { expectBookCountsMatchRows, postBook, waitForBook } from '../helpers/books';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// Starting generation again, and runs that start over within one book: what each leaves in the
// rows. Every test here stops or flushes Redis, so they share a private redis-server.

const pages = ['a dark forest at night', 'the forest again', 'the stormy sea', 'waves on the sea'];

let redis: OwnRedis;
let env: TestEnv;
let api: TestApi;
let worker: TestWorker | undefined;
// The soundscape provider's behaviour per call (1-based), for the last test.
let soundscapeCalls = 0;
let soundscapeCall: (n: number) => Promise<void> = async () => {};

beforeAll(async () => {
  redis = await startOwnRedis();
  env = await createTestEnv({ REDIS_URL: redis.url, SOUNDSCAPE_SECONDS: '4', WORKER_CONCURRENCY_SOUNDSCAPE: '1', RECONCILE_GRACE_MS: '1' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
  await redis?.stop();
});

async function startWorker(): Promise<TestWorker> {
  return startTestWorker(env.config, {
    providers: soundscapeWith(env.config, () => soundscapeCall(++soundscapeCalls)),
  });
}

async function stopWorker(): Promise<void> {
  await worker?.close();
  worker = undefined;
}

/** Redis back up, and the API able to reach it again. */
async function redisBack(): Promise<void> {
  await redis.start();
  await waitFor(async () => (await fetch(`${api.url}/readyz`)).status === 200, { what: 'API ready again' });
}

describe('restarting a book', () => {
  it('whose first enqueue failed analyses every spread (none was ever queued) and ends ready', async () => {
    await redis.stop();
    const res = await postBook(api, { title: 'Down', pages });
    expect(res.status).toBe(503);
    const bookId = res.body.error.details.bookId as string;
    // The spreads that could not be queued are failed with the reason, and the book with them.
    const [failed] = await queryRows(env.databaseUrl, 'select status, failed_spreads from books where id = $1', [bookId]);
    expect(failed).toMatchObject({ status: 'failed', failed_spreads: 2 });
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
    await redisBack();
    worker = await startWorker();
    const restarted = await api.request(`/v1/books/${bookId}/soundscapes`, { method: 'POST', user: 'reader' });
    expect(restarted.status).toBe(202);
    // (The API's Redis client may also deliver the refused flow now that Redis is back: its
    // jobs belong to run 1 and are skipped.)
    const book = await waitForBook(api, bookId);
    expect(book).toMatchObject({ status: 'ready', stats: { processedSpreads: 2 } });
    expect(book.warning).toBeUndefined();
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
    await stopWorker();
  });

  it('that is ready, when the restart cannot be enqueued, leaves it ready with its analysed spreads', async () => {
    worker = await startWorker();
    const created = await postBook(api, { title: 'Fine', pages });
    const ready = await waitForBook(api, created.body.bookId);
    expect(ready.status).toBe('ready');
    await stopWorker();
    await redis.stop();
    const res = await api.request(`/v1/books/${ready.bookId}/soundscapes`, { method: 'POST', user: 'reader' });
    expect(res.status).toBe(503);
    const [book] = await queryRows(env.databaseUrl, 'select status, processed_spreads, soundscapes_generated, processing_errors from books where id = $1', [ready.bookId]);
    expect(book).toMatchObject({ status: 'ready', processed_spreads: 2, soundscapes_generated: 2 });
    expect(book.processing_errors[0].message).toMatch(/Could not enqueue the book's jobs/);
    await expectBookCountsMatchRows(env.databaseUrl, ready.bookId);
    // Every soundscape was made: the warning says what went wrong, not that soundscapes failed
    // (with no spread failed it said "Some soundscapes failed to generate").
    const view = await readJson(await api.request(`/v1/books/${ready.bookId}`, { user: 'reader' }));
    expect(view).toMatchObject({ success: true, status: 'ready', warning: 'Generation could not be started again', stats: { soundscapesGenerated: 2, errorCount: 1 } });
    expect(view.progress).toMatchObject({ spreadsFailed: 0, soundscapesFailed: 0 });
    await redisBack();
  });

  it('that is ready with a failed soundscape, when the restart cannot be enqueued, fails that soundscape again with the reason', async () => {
    soundscapeCalls = 0;
    soundscapeCall = async (n) => {
      if (n === 1) throw new SoundscapeGenerationError('provider answered 400', { retryable: false, status: 400 });
    };
    try {
      worker = await startWorker();
      const created = await postBook(api, { title: 'Half', pages });
      const ready = await waitForBook(api, created.body.bookId);
      expect(ready).toMatchObject({ status: 'ready', warning: 'Some soundscapes failed to generate' });
      await stopWorker();
      await redis.stop();
      // The restart sets the failed soundscape back to pending, then cannot enqueue: before,
      // it stayed pending on a book that ended ready, counted neither made nor failed.
      const res = await api.request(`/v1/books/${ready.bookId}/soundscapes`, { method: 'POST', user: 'reader' });
      expect(res.status).toBe(503);
      const sounds = await queryRows(env.databaseUrl, 'select status, error_message from soundscapes where book_id = $1 order by status', [ready.bookId]);
      expect(sounds).toEqual([
        { status: 'completed', error_message: null },
        { status: 'failed', error_message: expect.stringMatching(/^Could not enqueue the book's jobs/) },
      ]);
      const [book] = await queryRows(env.databaseUrl, 'select status, soundscapes_generated, soundscapes_failed from books where id = $1', [ready.bookId]);
      expect(book).toEqual({ status: 'ready', soundscapes_generated: 1, soundscapes_failed: 1 });
      await expectBookCountsMatchRows(env.databaseUrl, ready.bookId);
    } finally {
      soundscapeCall = async () => {};
      await redisBack();
    }
  });
});

describe('a book re-run by the reconciler after Redis lost its jobs', () => {
  it('keeps a soundscape that failed in the run failed, counted once; starting again retries it and clears the error', async () => {
    let release: () => void = () => {};
    soundscapeCalls = 0;
    soundscapeCall = async (n) => {
      if (n === 1) throw new SoundscapeGenerationError('provider answered 400', { retryable: false, status: 400 });
      if (n === 2) await new Promise<void>((resolve) => (release = resolve));
    };
    worker = await startWorker();
    try {
      const created = await postBook(api, { title: 'Lost', pages });
      const bookId = created.body.bookId as string;
      await waitFor(() => soundscapeCalls >= 2, { what: 'one soundscape failed, the next in flight' });
      await redis.flushAll();
      expect((await reconcile(worker.ctx)).booksRequeued).toContain(bookId);
      release();
      const book = await waitForBook(api, bookId);
      // Before: the new run's segment step retried the failed soundscape; when it succeeded its
      // error stayed counted (error_count 1, soundscapes_failed 0, a warning about nothing).
      const [row] = await queryRows(env.databaseUrl, 'select soundscapes_failed, error_count from books where id = $1', [bookId]);
      expect(row).toMatchObject({ soundscapes_failed: 1, error_count: 1 });
      expect(book.warning).toBe('Some soundscapes failed to generate');
      await expectBookCountsMatchRows(env.databaseUrl, bookId);

      const restarted = await api.request(`/v1/books/${bookId}/soundscapes`, { method: 'POST', user: 'reader' });
      expect(restarted.status).toBe(202);
      const again = await waitForBook(api, bookId);
      expect(again.status).toBe('ready');
      expect(again.warning).toBeUndefined();
      const sounds = await queryRows(env.databaseUrl, 'select status from soundscapes where book_id = $1', [bookId]);
      expect(sounds.map((s) => s.status)).toEqual(['completed', 'completed']);
      const [after] = await queryRows(env.databaseUrl, 'select soundscapes_failed, error_count from books where id = $1', [bookId]);
      expect(after).toMatchObject({ soundscapes_failed: 0, error_count: 0 });
      await expectBookCountsMatchRows(env.databaseUrl, bookId);
    } finally {
      release();
      soundscapeCall = async () => {};
    }
  });
});
