import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkerContext, type WorkerContext } from '@soundqueue/worker';
import { jobId } from '@soundqueue/shared/queues';
import { reconcile } from '../../apps/worker/src/reconciler';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections, waitForTerminal } from '../helpers/batches';
import { expectBookCountsMatchRows, postBook, waitForBook } from '../helpers/books';
import { createTestEnv, queryRows, TEST_REDIS_URL, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { startOpenAiSpeechServer, type OpenAiSpeechFake } from '../fakes/openai-speech-server';
import { fourSettingBook } from '../fixtures/books';

// A root alive in 'waiting-children' whose flow lists a job Redis no longer holds (its hash
// deleted by hand, or evicted under a maxmemory policy): BullMQ's root waits for it for ever,
// and only STUCK_AFTER_MS (hours) used to end the run, failing it. The reconciler now takes
// such a root for lost, as a missing one: it removes it and starts a new run of the unfinished
// work. Its children that are only waiting or running leave it alive.
let env: TestEnv;
let api: TestApi;
let fake: OpenAiSpeechFake;
let direct: Redis;
// The reconciler's passes are the test's own: no worker here runs the maintenance queue, whose
// schedule would run passes of its own.
let reconciler: WorkerContext;
const batchQueues = 'audio-tts,audio-mix,audio-batch';

beforeAll(async () => {
  fake = await startOpenAiSpeechServer({ delayMs: 50 });
  env = await createTestEnv({
    SPEECH_PROVIDER: 'openai',
    OPENAI_API_KEY: 'sk-test',
    OPENAI_BASE_URL: `${fake.url}/v1`,
    // One speech job at a time: a held one keeps the others waiting.
    WORKER_CONCURRENCY_AUDIO_TTS: '1',
    PROVIDER_TIMEOUT_MS: '8000',
    RECONCILE_GRACE_MS: '1',
    SOUNDSCAPE_SECONDS: '4',
  });
  api = await startTestApi(env.config);
  direct = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
  reconciler = await createWorkerContext(env.config);
});
afterAll(async () => {
  await reconciler?.close();
  direct?.disconnect();
  await api?.close();
  await env?.cleanup();
  await fake?.close();
});

const keyOf = (queue: string, id: string) => `${env.prefix}:${queue}:${id}`;

describe('the reconciler and a flow waiting for a job Redis lost', () => {
  // How a job is lost to its flow: its hash deleted; its id taken off its state list (the hash
  // left: no worker will take it); a parent's dependency set deleted (nothing moves it on).
  const loseHash = (queue: string, id: string) => direct.del(keyOf(queue, id));
  const loseListEntry = (queue: string, id: string) => direct.lrem(keyOf(queue, 'wait'), 0, id);
  const loseDependencies = (queue: string, id: string) => direct.del(`${keyOf(queue, id)}:dependencies`);
  it.each([
    { lose: 'the mix job (a child of the root)', tag: 'mix', queue: 'audio-mix', id: jobId.audioMix, how: loseHash },
    { lose: 'the speech job (a child of a mix job)', tag: 'tts', queue: 'audio-tts', id: jobId.audioTts, how: loseHash },
    { lose: "the speech job's place in its wait list (its data left)", tag: 'listed', queue: 'audio-tts', id: jobId.audioTts, how: loseListEntry },
    { lose: "a mix job's dependency set (the speech job it waits for left)", tag: 'deps', queue: 'audio-mix', id: jobId.audioMix, how: loseDependencies },
  ])('starts a new run of a running batch that lost $lose, which completes it', async ({ tag, queue, id, how }) => {
    const worker = await startTestWorker({ ...env.config, WORKER_QUEUES: batchQueues });
    try {
      // The first speech call never answers until the provider timeout: its job is running,
      // the other tracks' jobs wait behind it. (Texts of their own: a voice made before is reused.)
      fake.script(['hang']);
      const created = await createBatch(api, { visionId: `lost-${tag}`, sections: sampleSections(3, `Lost ${tag}`), variants: ['voice_only'], voice: 'alloy' });
      expect(created.status).toBe(201);
      const batchId = created.body.id as string;
      const tracks = await queryRows<{ id: string }>(env.databaseUrl, 'select id from audio_tracks where batch_id = $1', [batchId]);
      const speechState = (trackId: string) => reconciler.queues['audio-tts'].getJobState(jobId.audioTts(trackId, 1));
      const held = await waitFor(async () => {
        for (const t of tracks) if ((await speechState(t.id)) === 'active') return t.id;
        return null;
      }, { what: 'a speech job running' });
      // Running and waiting children leave the root alive.
      expect(await reconcile(reconciler)).toMatchObject({ batchesRequeued: [], errors: [] });

      const victim = tracks.find((t) => t.id !== held)!.id;
      expect(await speechState(victim)).toBe('waiting');
      expect(await how(queue, id(victim, 1))).toBe(1);
      const report = await reconcile(reconciler);
      expect(report).toMatchObject({ batchesRequeued: [batchId], errors: [] });
      // The old root is gone with its jobs that were waiting; the held track's mix job stays
      // (the speech job under it is running) and ends changing nothing.
      const old = reconciler.queues;
      expect(await old['audio-batch'].getJob(jobId.audioBatch(batchId, 1))).toBeUndefined();
      expect(await old['audio-mix'].getJob(jobId.audioMix(victim, 1))).toBeUndefined();
      // (A speech job under a mix job whose dependency set is gone is known to no set: it
      // stays, and ends changing nothing, as a job of a run the batch has moved on from.)
      if (how !== loseDependencies) expect(await old['audio-tts'].getJob(jobId.audioTts(victim, 1))).toBeUndefined();
      expect(await old['audio-mix'].getJobState(jobId.audioMix(held, 1))).toBe('waiting-children');

      const batch = await waitForTerminal(api, batchId);
      expect(batch).toMatchObject({ status: 'completed', tracks_completed: 3, tracks_failed: 0, tracks_pending: 0, run: 2 });
      expect(batch.tracks.every((t: { status: string }) => t.status === 'completed')).toBe(true);
      await expectCountersMatchRows(env.databaseUrl, batchId);
      expect((await reconcile(reconciler)).batchesRequeued).toEqual([]);
    } finally {
      await worker.close();
    }
  });

  it('starts a new run of a book whose root lost a soundscape job it added as a step, which makes it ready', async () => {
    // No soundscape worker yet: the root adds its soundscape jobs and waits for them.
    const worker = await startTestWorker({ ...env.config, WORKER_QUEUES: 'book,book-analyze' });
    let soundscapes: TestWorker | undefined;
    try {
      const created = await postBook(api, { title: 'Lost soundscape', pages: fourSettingBook().slice(0, 16) });
      expect(created.status).toBe(202);
      const bookId = created.body.bookId as string;
      const root = reconciler.queues.book;
      await waitFor(async () => {
        const job = await root.getJob(jobId.book(bookId, 1));
        return job?.data.step === 'finalize' && (await job.getState()) === 'waiting-children';
      }, { what: 'the book root waiting for its soundscapes' });
      const sounds = await queryRows<{ id: string }>(env.databaseUrl, 'select id from soundscapes where book_id = $1 order by id', [bookId]);
      expect(sounds.length).toBeGreaterThan(1);
      // Waiting soundscape jobs leave the root alive.
      expect(await reconcile(reconciler)).toMatchObject({ booksRequeued: [], errors: [] });
      expect(await direct.del(keyOf('soundscape', jobId.soundscape(sounds[0]!.id, 1)))).toBe(1);
      expect(await reconcile(reconciler)).toMatchObject({ booksRequeued: [bookId], errors: [] });
      expect(await root.getJob(jobId.book(bookId, 1))).toBeUndefined();
      expect(await reconciler.queues.soundscape.getJob(jobId.soundscape(sounds[1]!.id, 1))).toBeUndefined();

      soundscapes = await startTestWorker({ ...env.config, WORKER_QUEUES: 'soundscape' });
      const book = await waitForBook(api, bookId);
      expect(book).toMatchObject({ status: 'ready', stats: { totalSpreads: 8, processedSpreads: 8, soundscapesGenerated: sounds.length } });
      expect(book.errors).toBeUndefined();
      await expectBookCountsMatchRows(env.databaseUrl, bookId);
      const rows = await queryRows(env.databaseUrl, `select run, (select count(*)::int from soundscapes s where s.book_id = b.id and s.status <> 'completed') as open from books b where id = $1`, [bookId]);
      expect(rows[0]).toEqual({ run: 2, open: 0 });
      // The new run analysed nothing again: every spread had been analysed in the first.
      const analyses = await queryRows(env.databaseUrl, `select count(*)::int as n from provider_calls where book_id = $1 and kind = 'analysis'`, [bookId]);
      expect(analyses[0].n).toBe(8);
    } finally {
      await soundscapes?.close();
      await worker.close();
    }
  });
});
