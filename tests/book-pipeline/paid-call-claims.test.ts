import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobId } from '@soundqueue/shared/queues';
import { createProviders } from '../../apps/worker/src/providers';
import { reconcile } from '../../apps/worker/src/reconciler';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { expectBookCountsMatchRows, postBook, waitForBook } from '../helpers/books';
import { createTestEnv, deleteRedisPrefix, queryRows, TEST_REDIS_URL, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// Redis loses a book's jobs while a soundscape is being generated (or a spread analysed) and
// that job's worker lives on. The reconciler's new run queues the work again (its row says
// `generating` / `analyzing`). Before, the new job called the provider at once: the same call
// paid twice. Now that status is a claim the first job renews: the new job waits until the
// first one has finished, then finds the work done.

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let calls = 0;
let release: () => void = () => {};
// The analysis provider's calls, and whether the next one blocks until `releaseAnalysis`.
let analysisCalls = 0;
let blockNextAnalysis = false;
let releaseAnalysis: () => void = () => {};

beforeAll(async () => {
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '4', RECONCILE_GRACE_MS: '1' });
  api = await startTestApi(env.config);
  const real = createProviders(env.config);
  worker = await startTestWorker(env.config, {
    providers: {
      ...real,
      analysis: {
        name: real.analysis.name,
        async analyze(request) {
          analysisCalls += 1;
          if (blockNextAnalysis) {
            blockNextAnalysis = false;
            await new Promise<void>((resolve) => (releaseAnalysis = resolve));
          }
          return real.analysis.analyze(request);
        },
      },
      soundscape: {
        name: real.soundscape.name,
        async generate(request, signal) {
          calls += 1;
          if (calls === 1) await new Promise<void>((resolve) => (release = resolve));
          return real.soundscape.generate(request, signal);
        },
      },
    },
  });
});
afterAll(async () => {
  release();
  releaseAnalysis();
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

describe('a soundscape being generated when Redis loses the book', () => {
  it('is generated once: the new run waits for the live claim instead of paying again', async () => {
    const created = await postBook(api, { title: 'Claimed', pages: ['a dark forest at night', 'the forest again'] });
    const bookId = created.body.bookId as string;
    const [sound] = await waitFor(async () => {
      const rows = await queryRows<{ id: string }>(env.databaseUrl, `select id from soundscapes where book_id = $1 and status = 'generating'`, [bookId]);
      return rows.length === 1 ? rows : null;
    }, { what: 'the soundscape being generated' });
    await waitFor(() => calls === 1 || null, { what: 'the provider called' });

    await deleteRedisPrefix(TEST_REDIS_URL, env.prefix); // Redis restarted empty; the worker lives on
    expect((await reconcile(worker.ctx)).booksRequeued).toContain(bookId);
    // The new run's soundscape job is running and says it waits for the other job's claim.
    const second = jobId.soundscape(sound!.id, 2);
    await waitFor(async () => {
      const job = await worker.ctx.queues.soundscape.getJob(second);
      return (job?.progress as { waitingFor?: string } | undefined)?.waitingFor ? job : null;
    }, { what: 'the new run to wait for the live claim' });
    expect(calls).toBe(1);

    release();
    const book = await waitForBook(api, bookId);
    expect(book.status).toBe('ready');
    expect(calls).toBe(1);
    const [paid] = await queryRows<{ n: number }>(env.databaseUrl, `select count(*)::int as n from provider_calls where book_id = $1 and kind = 'soundscape'`, [bookId]);
    expect(paid!.n).toBe(1);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });

  it('an analysis being made is made once too: the new run waits for the live claim', async () => {
    blockNextAnalysis = true;
    const created = await postBook(api, { title: 'Analysed', pages: ['the stormy sea', 'waves on the sea'] });
    const bookId = created.body.bookId as string;
    await waitFor(() => (analysisCalls >= 1 && !blockNextAnalysis) || null, { what: 'the analysis call in flight' });
    const callsBefore = analysisCalls;

    await deleteRedisPrefix(TEST_REDIS_URL, env.prefix);
    expect((await reconcile(worker.ctx)).booksRequeued).toContain(bookId);
    const second = jobId.bookAnalyze(bookId, 0, 2);
    await waitFor(async () => {
      const job = await worker.ctx.queues['book-analyze'].getJob(second);
      return (job?.progress as { waitingFor?: string } | undefined)?.waitingFor ? job : null;
    }, { what: 'the new run to wait for the live claim' });
    expect(analysisCalls).toBe(callsBefore);

    releaseAnalysis();
    const book = await waitForBook(api, bookId);
    expect(book.status).toBe('ready');
    expect(analysisCalls).toBe(callsBefore);
    const [paid] = await queryRows<{ n: number }>(env.databaseUrl, `select count(*)::int as n from provider_calls where book_id = $1 and kind = 'analysis'`, [bookId]);
    expect(paid!.n).toBe(1);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });
});
