import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createWorkerContext } from '@soundqueue/worker';
import { jobId } from '@soundqueue/shared/queues';
import { reconcile } from '../../apps/worker/src/reconciler';
import { startTestApi, startTestWorker, type TestApi } from '../helpers/app';
import { createBatch, expectCountersMatchRows, getBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { expectBookCountsMatchRows, postBook, waitForBook } from '../helpers/books';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { startOpenAiSpeechServer, type OpenAiSpeechFake } from '../fakes/openai-speech-server';
import { fourSettingBook } from '../fixtures/books';

// Redis is flushed mid-run on a private redis-server; PostgreSQL still says what is
// unfinished, and the reconciler re-enqueues exactly that.
let redis: OwnRedis;
let env: TestEnv;
let api: TestApi;
let fake: OpenAiSpeechFake;

beforeAll(async () => {
  redis = await startOwnRedis();
  fake = await startOpenAiSpeechServer({ delayMs: 250 });
  env = await createTestEnv({
    REDIS_URL: redis.url,
    SPEECH_PROVIDER: 'openai',
    OPENAI_API_KEY: 'sk-test',
    OPENAI_BASE_URL: `${fake.url}/v1`,
    WORKER_CONCURRENCY_AUDIO_TTS: '1',
    RECONCILE_GRACE_MS: '1',
    SOUNDSCAPE_SECONDS: '4',
    WORKER_CONCURRENCY_SOUNDSCAPE: '1',
  });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
  await fake?.close();
  await redis?.stop();
});

describe('the reconciler after FLUSHALL mid-run', () => {
  it('finishes a batch with exact counts and no duplicate synthesis', async () => {
    const worker = await startTestWorker(env.config);
    try {
      const created = await createBatch(api, { visionId: 'flush', sections: sampleSections(8, 'Flush'), variants: ['voice_only', 'energy'], voice: 'alloy' });
      await waitFor(async () => (await getBatch(api, created.body.id)).tracks_completed >= 2, { what: 'two tracks done' });
      await redis.flushAll();
      // Nothing in Redis now: without the reconciler this batch would wait forever.
      const report = await reconcile(worker.ctx);
      expect(report.batchesRequeued).toContain(created.body.id);
      const batch = await waitForTerminal(api, created.body.id);
      expect(batch).toMatchObject({ status: 'completed', tracks_completed: 16, tracks_failed: 0, tracks_pending: 0, run: 2 });
      await expectCountersMatchRows(env.databaseUrl, batch.id);
      // Each section's voice was synthesized at most twice (once in flight when Redis was
      // flushed), never once per track.
      const renditions = await queryRows(env.databaseUrl, `select count(*)::int as n from voice_renditions where status = 'ready'`);
      expect(renditions[0].n).toBe(8);
      expect(fake.requests.length).toBeLessThanOrEqual(8 + 1);
      // A second pass finds nothing to do.
      expect((await reconcile(worker.ctx)).batchesRequeued).toEqual([]);
    } finally {
      await worker.close();
    }
  });

  it('finishes a book without redoing finished spreads or soundscapes', async () => {
    const worker = await startTestWorker(env.config);
    try {
      const created = await postBook(api, { title: 'Flushed', pages: fourSettingBook().slice(0, 24) });
      await waitFor(async () => (await queryRows(env.databaseUrl, `select count(*)::int as n from soundscapes where book_id = $1 and status = 'completed'`, [created.body.bookId]))[0].n >= 1, { what: 'a soundscape done' });
      await redis.flushAll();
      const report = await reconcile(worker.ctx);
      expect(report.booksRequeued).toContain(created.body.bookId);
      const book = await waitForBook(api, created.body.bookId);
      expect(book).toMatchObject({ status: 'ready', stats: { totalSpreads: 12, processedSpreads: 12, scenesCreated: 3, soundscapesGenerated: 3 } });
      expect(book.errors).toBeUndefined();
      await expectBookCountsMatchRows(env.databaseUrl, book.bookId);
      const calls = await queryRows(env.databaseUrl, `select kind, count(*)::int as n from provider_calls where book_id = $1 group by kind`, [book.bookId]);
      const of = (kind: string) => calls.find((c) => c.kind === kind)?.n ?? 0;
      // At most the one soundscape in flight at the flush is made twice.
      expect(of('soundscape')).toBeLessThanOrEqual(4);
      expect(of('analysis')).toBeLessThanOrEqual(12 + 8);
    } finally {
      await worker.close();
    }
  });
});

// A root job whose data Redis lost while its id stays listed (a key evicted under a maxmemory
// policy, or deleted by hand): BullMQ still reports the id's state ('waiting-children'), yet
// no job will ever run there. Nothing is processing when the key goes, so the reconciler's
// pass is the one thing that can move the work on.
describe('the reconciler and a root job whose data Redis lost', () => {
  async function withRootGone(queue: 'audio-batch' | 'book', id: string, test: (report: Awaited<ReturnType<typeof reconcile>>) => Promise<void>) {
    const direct = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    const ctx = await createWorkerContext(env.config);
    try {
      const key = `${env.prefix}:${queue}:${queue === 'book' ? jobId.book(id, 1) : jobId.audioBatch(id, 1)}`;
      expect(await direct.del(key)).toBe(1);
      expect(await ctx.queues[queue].getJobState(queue === 'book' ? jobId.book(id, 1) : jobId.audioBatch(id, 1))).toBe('waiting-children');
      await test(await reconcile(ctx));
    } finally {
      await ctx.close();
      direct.disconnect();
    }
  }

  it('re-enqueues the batch as a new run, which finishes it', async () => {
    const created = await createBatch(api, { visionId: 'lost-root', sections: sampleSections(2, 'Lost'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    await withRootGone('audio-batch', created.body.id, async (report) => {
      expect(report.batchesRequeued).toEqual([created.body.id]);
    });
    const worker = await startTestWorker(env.config);
    try {
      const batch = await waitForTerminal(api, created.body.id);
      expect(batch).toMatchObject({ status: 'completed', tracks_completed: 2, run: 2 });
      await expectCountersMatchRows(env.databaseUrl, batch.id);
    } finally {
      await worker.close();
    }
  });

  it('re-enqueues the book as a new run, which finishes it', async () => {
    const created = await postBook(api, { title: 'Lost root', pages: fourSettingBook().slice(0, 4) });
    expect(created.status).toBe(202);
    await withRootGone('book', created.body.bookId, async (report) => {
      expect(report.booksRequeued).toEqual([created.body.bookId]);
    });
    const worker = await startTestWorker(env.config);
    try {
      const book = await waitForBook(api, created.body.bookId);
      expect(book).toMatchObject({ status: 'ready', stats: { totalSpreads: 2, processedSpreads: 2 } });
      await expectBookCountsMatchRows(env.databaseUrl, book.bookId);
    } finally {
      await worker.close();
    }
  });
});
