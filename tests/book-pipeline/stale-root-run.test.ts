import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SoundscapeGenerationError } from '@soundqueue/shared/errors';
import type { ProgressEvent } from '@soundqueue/shared/events';
import { createProviders } from '../../apps/worker/src/providers';
import { failBookLeftovers, finaliseBook } from '@soundqueue/shared/rollup/books';
import { processBook } from '../../apps/worker/src/processors/book';
import { processSoundscape } from '../../apps/worker/src/processors/soundscape';
import { reconcile } from '../../apps/worker/src/reconciler';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { expectBookCountsMatchRows, postBook, restartBook, waitForBook } from '../helpers/books';
import { analysisRefusing } from '../helpers/providers';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// The book's root job reads the book's run with a plain SELECT, then fails the run's
// leftovers (spreads in its segment step, soundscapes in its finalize step) and goes on. The
// reconciler's timeout can end the book meanwhile and the user start it again (run N + 1):
// before, the old root then failed the new run's fresh spreads or soundscapes as "lost",
// segmented for it, and ended the book that the new run was processing. Each step now checks
// the run under the book row's lock, which a restart takes too.

const pages = ['a dark forest at night', 'the forest again', 'the stormy sea', 'waves on the sea'];

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;

beforeAll(async () => {
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '2' });
  api = await startTestApi(env.config);
  const real = createProviders(env.config);
  worker = await startTestWorker(env.config, {
    providers: {
      ...real,
      // Spreads whose text says "sea" cannot be analysed, and no soundscape can be made: a
      // book ends ready with failed spreads and soundscapes that a restart gives another go.
      analysis: analysisRefusing(real, 'sea'),
      soundscape: {
        name: real.soundscape.name,
        async generate() {
          throw new SoundscapeGenerationError('provider said 400', { retryable: false, status: 400 });
        },
      },
    },
  });
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

// Two ready books, each with a failed spread and failed soundscapes, made while the worker
// runs; then the worker stops, so only the calls the tests make run them.
const readyBooks: string[] = [];
beforeAll(async () => {
  for (const title of ['Segment', 'Finalize', 'Stuck']) {
    const created = await postBook(api, { title, pages });
    expect(created.status).toBe(202);
    const book = await waitForBook(api, created.body.bookId);
    expect(book).toMatchObject({ status: 'ready', stats: { processedSpreads: 1 } });
    readyBooks.push(book.bookId as string);
  }
  await worker.running.close();
}, 600_000);

/** Starts a ready book again (run 2); nothing processes it. */
/**
 * The root job of `run` with a publish that, the first time it is called, does what the
 * reconciler's timeout and then the user would: end the book, and start it again.
 */
function rootOf(bookId: string, run: number, step: 'segment' | 'finalize') {
  let restartedRun: number | undefined;
  const publish = async (events: ProgressEvent[]) => {
    await worker.ctx.publish(events);
    if (restartedRun !== undefined) return;
    restartedRun = 0;
    await queryRows(env.databaseUrl, `update books set status = 'failed', completed_at = now() where id = $1 and status = 'processing'`, [bookId]);
    const again = await api.request(`/v1/books/${bookId}/soundscapes`, { method: 'POST', user: 'reader' });
    expect(again.status).toBe(202);
    restartedRun = (await readJson(again)).run;
  };
  const job = {
    id: `book.${bookId}.r${run}`,
    queueQualifiedName: `${env.config.QUEUE_PREFIX}:book`,
    data: { bookId, run, step },
    attemptsMade: 0,
    async updateData() {},
    async moveToWaitingChildren() {
      return false;
    },
  };
  return {
    run: () => processBook({ ...worker.ctx, publish }, { job: job as never, token: 't', worker: undefined as never, maxRateLimitRestarts: 0 }),
    restartedRun: () => restartedRun,
  };
}

describe('a book root of an older run', () => {
  it('in its segment step neither fails the new run\'s spreads nor segments for it', async () => {
    const bookId = readyBooks[0]!;
    await restartBook(api, bookId);
    // Run 2's jobs never ran: its unanalysed spread is a leftover of run 2 for this root.
    const root = rootOf(bookId, 2, 'segment');
    expect(await root.run()).toEqual({ status: null });
    expect(root.restartedRun()).toBe(3);
    const [book] = await queryRows(env.databaseUrl, 'select status, run, failed_spreads, error_count, scenes_created from books where id = $1', [bookId]);
    expect(book).toMatchObject({ status: 'processing', run: 3, failed_spreads: 0, error_count: 0 });
    const spreads = await queryRows(env.databaseUrl, 'select index, status from book_spreads where book_id = $1 order by index', [bookId]);
    expect(spreads).toEqual([{ index: 0, status: 'analyzed' }, { index: 1, status: 'pending' }]);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);

    // Had it enqueued soundscape jobs of run 2 before the restart, they would leave the
    // soundscapes to run 3's own jobs: no claim, no provider call.
    const sounds = await queryRows(env.databaseUrl, `select id, status from soundscapes where book_id = $1`, [bookId]);
    expect(sounds.length).toBeGreaterThan(0);
    const calls = async () => (await queryRows(env.databaseUrl, `select count(*)::int as n from provider_calls where book_id = $1 and kind = 'soundscape'`, [bookId]))[0].n;
    const callsBefore = await calls();
    const job = { id: 'old', data: { bookId, soundscapeId: sounds[0].id, run: 2 }, attemptsMade: 0, opts: { attempts: 3 }, async updateProgress() {} };
    const result = await processSoundscape(worker.ctx, { job: job as never, token: 't', worker: undefined as never, maxRateLimitRestarts: 0 });
    expect(result).toEqual({ skipped: 'job of run 2, the book is on run 3' });
    expect((await queryRows(env.databaseUrl, `select status from soundscapes where id = $1`, [sounds[0].id]))[0].status).toBe(sounds[0].status);
    expect(await calls()).toBe(callsBefore);
  });

  it('in its finalize step ends only its own run: a restart after it finds the new run\'s soundscapes untouched', async () => {
    const bookId = readyBooks[1]!;
    await restartBook(api, bookId);
    // The restart gave the failed soundscapes another go: they are run 2's leftovers.
    const before = await queryRows(env.databaseUrl, `select status from soundscapes where book_id = $1`, [bookId]);
    expect(before.length).toBeGreaterThan(0);
    expect(before.every((s: any) => s.status === 'pending')).toBe(true);
    // Run 2's root fails them and ends run 2 (ready: a spread was analysed), and only then
    // publishes; the restart in the publish starts run 3. Before, the root published after
    // each leftover it failed, and ended run 3, which it had never seen.
    const root = rootOf(bookId, 2, 'finalize');
    expect(await root.run()).toEqual({ status: 'ready' });
    expect(root.restartedRun()).toBe(3);
    const [book] = await queryRows(env.databaseUrl, 'select status, run, soundscapes_failed, error_count from books where id = $1', [bookId]);
    expect(book).toMatchObject({ status: 'processing', run: 3, soundscapes_failed: 0, error_count: 0 });
    const after = await queryRows(env.databaseUrl, `select status from soundscapes where book_id = $1`, [bookId]);
    expect(after.every((s: any) => s.status === 'pending')).toBe(true);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);

    // A root of run 2 that read the book before that restart and takes the book's lock after
    // it (the window between its first read and its transaction) changes nothing: the run is
    // checked under the lock.
    const lost = { stack: null, attempt: 1, message: 'lost' };
    expect(await finaliseBook(worker.ctx.db, bookId, {}, { run: 2, soundscapes: { ...lost, errorType: 'SoundscapeGenerationError' } })).toEqual({ status: null, events: [], voidedFiles: [] });
    expect(await failBookLeftovers(worker.ctx.db, bookId, { run: 2, spreads: { ...lost, errorType: 'ContentAnalysisError' } })).toBeNull();
    const [still] = await queryRows(env.databaseUrl, 'select status, run, failed_spreads, soundscapes_failed, error_count from books where id = $1', [bookId]);
    expect(still).toMatchObject({ status: 'processing', run: 3, failed_spreads: 0, soundscapes_failed: 0, error_count: 0 });
    const spreads = await queryRows(env.databaseUrl, 'select status from book_spreads where book_id = $1 order by index', [bookId]);
    expect(spreads.map((s: any) => s.status)).toEqual(['analyzed', 'pending']);
    expect((await queryRows(env.databaseUrl, `select status from soundscapes where book_id = $1`, [bookId])).every((s: any) => s.status === 'pending')).toBe(true);
    // Run 3's own calls do their work.
    const ended = await finaliseBook(worker.ctx.db, bookId, {}, { run: 3, spreads: { ...lost, errorType: 'ContentAnalysisError' }, soundscapes: { ...lost, errorType: 'SoundscapeGenerationError' } });
    expect(ended.status).toBe('ready');
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });

  it('timed out by the reconciler: what the stuck run left is failed in one go, and the book ends once', async () => {
    const bookId = readyBooks[2]!;
    await restartBook(api, bookId);
    // Run 2 started seven hours ago and has not moved since (STUCK_AFTER_MS is 6 hours).
    await queryRows(env.databaseUrl, `update books set started_at = now() - interval '7 hours', updated_at = now() - interval '7 hours' where id = $1`, [bookId]);
    const report = await reconcile(worker.ctx);
    expect(report.booksTimedOut).toEqual([bookId]);
    const [book] = await queryRows(env.databaseUrl, 'select status, run, failed_spreads, soundscapes_failed, processing_errors from books where id = $1', [bookId]);
    expect(book).toMatchObject({ status: 'ready', run: 2, failed_spreads: 1 });
    expect(book.soundscapes_failed).toBeGreaterThan(0);
    expect(book.processing_errors.map((e: any) => e.message)).toEqual(
      Array(1 + book.soundscapes_failed).fill('Processing did not finish in time and was stopped; start generation again.'),
    );
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
    // Nothing left to time out.
    expect((await reconcile(worker.ctx)).booksTimedOut).toEqual([]);
  });
});
