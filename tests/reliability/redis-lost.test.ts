import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { postBook, waitForBook } from '../helpers/books';
import { expectBatchSettled, expectBookSettled, openDb, type TestDb } from '../helpers/chaos';
import { killAll, spawnWorker, type ServiceProcess } from '../helpers/processes';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { openReliabilityLog } from '../helpers/reliability-log';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { openSse } from '../helpers/sse';
import { waitFor } from '../helpers/wait';
import { twoSceneBook } from '../fixtures/books';
import { readingGeminiAnswer, startGeminiServer, type GeminiFake } from '../fakes/gemini-server';
import { fakeProviderEnv } from '../fakes/provider-env';
import { startOpenAiSpeechServer, type OpenAiSpeechFake } from '../fakes/openai-speech-server';
import { startReplicateServer, type ReplicateFake } from '../fakes/replicate-server';

// A private redis-server is killed and started again empty (nothing saved) in the middle of
// a batch and of a book, under two real worker processes (generation and mixing, as in
// docker-compose) and an in-process API. Nobody calls the reconciler by hand: it runs on its
// own schedule (RECONCILE_INTERVAL_MS) and must notice that PostgreSQL has unfinished work
// that Redis no longer holds.
const log = openReliabilityLog('redis-lost');

let redis: OwnRedis;
let env: TestEnv;
let api: TestApi;
let db: TestDb;
let speech: OpenAiSpeechFake;
let gemini: GeminiFake;
let replicate: ReplicateFake;
let generation: ServiceProcess;
let mixing: ServiceProcess;

beforeAll(async () => {
  redis = await startOwnRedis();
  speech = await startOpenAiSpeechServer({ delayMs: 1_500 });
  gemini = await startGeminiServer({
    delayMs: 1_500,
    answer: readingGeminiAnswer,
  });
  replicate = await startReplicateServer({ delayMs: 2_500 });
  env = await createTestEnv({
    REDIS_URL: redis.url,
    ...fakeProviderEnv({ speech: speech, gemini: gemini, replicate: replicate }),
    REPLICATE_POLL_INTERVAL_MS: '200',
    SOUNDSCAPE_SECONDS: '3',
    PROVIDER_TIMEOUT_MS: '30000',
    WORKER_CONCURRENCY_AUDIO_TTS: '2',
    WORKER_LOCK_DURATION_MS: '5000',
    WORKER_STALLED_INTERVAL_MS: '2000',
    RECONCILE_INTERVAL_MS: '2000',
    RECONCILE_GRACE_MS: '1000',
  });
  api = await startTestApi(env.config);
  db = openDb(env.databaseUrl);
  generation = spawnWorker({ ...env.env, WORKER_QUEUES: 'audio-tts,book-analyze,soundscape,audio-batch,book,webhooks,maintenance' }, 'worker-generation');
  mixing = spawnWorker({ ...env.env, WORKER_QUEUES: 'audio-mix' }, 'worker-mixing');
  await Promise.all([generation.ready, mixing.ready]);
});

afterAll(async () => {
  await killAll([generation, mixing]);
  await api?.close();
  await db?.close();
  await env?.cleanup();
  await redis?.stop();
  await Promise.all([speech?.close(), gemini?.close(), replicate?.close()]);
  log.end();
});

const speechRequests = () => speech.requests.filter((r) => r.path.startsWith('/v1/audio/speech')).length;
const analysisRequests = () => gemini.requests.filter((r) => r.path.includes(':generateContent')).length;
const predictionsCreated = () => replicate.requests.filter((r) => r.method === 'POST' && /predictions$/.test(r.path)).length;

/** Kills redis-server and starts it again on the same port with nothing in it. */
async function restartRedisEmpty(): Promise<{ downMs: number; readyz503: string }> {
  const started = Date.now();
  const seen = [generation.logs.length, mixing.logs.length];
  await redis.stop();
  // While it is away the API says so: 503 naming redis.
  const res = await fetch(`${api.url}/readyz`);
  const body = await readJson(res);
  expect(res.status).toBe(503);
  expect(body.error.message).toMatch(/redis/);
  // Down until both worker processes have noticed (a warning naming Redis), not just a blip.
  const noticed = (p: ServiceProcess, from: number) => p.logs.slice(from).some((l) => (l.level ?? 0) >= 40 && /redis/i.test(String(l.msg)));
  await waitFor(() => noticed(generation, seen[0]!) && noticed(mixing, seen[1]!), { timeoutMs: 30_000, what: 'both workers to notice Redis is gone' });
  await redis.start();
  return { downMs: Date.now() - started, readyz503: body.error.message };
}

async function readyzOk(): Promise<boolean> {
  const res = await fetch(`${api.url}/readyz`);
  return res.status === 200;
}

describe('Redis restarted empty', () => {
  it('mid-batch: the scheduled reconciler finishes the batch with exact counts; workers and the API carry on', async () => {
    await log.scenario(
      'Redis killed and restarted empty mid-batch (6 sections × 2 variants)',
      'redis-server SIGKILLed with 2+ tracks done and the rest queued or running; started again empty (no RDB/AOF)',
      async (r) => {
        const sections = sampleSections(6, 'Lost');
        const variants = ['voice_only', 'sleep'];
        const created = await createBatch(api, { visionId: 'redis-lost', sections, variants, voice: 'alloy' });
        expect(created.status).toBe(201);
        const batchId = created.body.id as string;
        await waitFor(async () => (await db.one(`select tracks_completed from audio_generation_batches where id = $1`, [batchId])).tracks_completed >= 2, {
          timeoutMs: 120_000,
          what: 'two tracks completed',
        });
        const before = await db.one(`select tracks_completed, tracks_pending from audio_generation_batches where id = $1`, [batchId]);
        expect(before.tracks_pending).toBeGreaterThan(0);
        const inFlight = (await db.one(`select count(*)::int as n from voice_renditions where status = 'generating'`)).n;
        const outage = await restartRedisEmpty();
        r.held(`/readyz answered 503 while Redis was down ("${outage.readyz503}")`);

        const batch = await waitForTerminal(api, batchId, { timeoutMs: 180_000 });
        const facts = await expectBatchSettled(db, env.databaseUrl, batchId, sections.length * variants.length);
        expect(batch.status).toBe('completed');
        expect(facts.run).toBeGreaterThanOrEqual(2);
        r.held(`batch completed by a reconciler run (run ${facts.run}): ${facts.completed}/${facts.total} tracks, counters equal rows, no duplicate tracks`);

        const renditions = (await db.one(`select count(*)::int as n from voice_renditions where status = 'ready'`)).n;
        const calls = speechRequests();
        expect(renditions).toBe(sections.length * variants.length);
        expect(calls).toBeLessThanOrEqual(renditions + inFlight);
        r.held(`speech calls ${calls} ≤ renditions ${renditions} + in flight at the restart ${inFlight}`);

        expect(generation.alive() && mixing.alive()).toBe(true);
        await waitFor(readyzOk, { timeoutMs: 30_000, what: '/readyz 200 again' });
        r.held('both worker processes survived the outage; /readyz 200 again');

        // The API's connections came back too: a new batch streams to its end over the
        // (re-subscribed) event channel.
        const next = await createBatch(api, { visionId: 'redis-back', sections: sampleSections(1, 'Back'), variants: ['voice_only'], voice: 'echo' });
        expect(next.status).toBe(201);
        const stream = await openSse(`${api.url}/v1/audio/batches/${next.body.id}/events`, { Authorization: `Bearer ${await tokenFor('user-a')}` });
        try {
          const events = await stream.waitFor((e) => e.some((x) => x.event === 'batch.completed'), 120_000);
          expect(events[0]!.event).toBe('snapshot');
          r.held(`a batch created after the outage completed and streamed ${events.length} events to batch.completed`);
        } finally {
          stream.close();
        }
        r.measure('tracks', facts.total);
        r.measure('tracks done before the restart', before.tracks_completed);
        r.measure('redis down ms', outage.downMs);
        r.measure('run', facts.run);
        r.measure('speech calls', calls);
        r.measure('renditions', renditions);
      },
    );
  }, 300_000);

  it('mid-book (during analysis, then during soundscapes): the scheduled reconciler finishes the book with exact counts', async () => {
    await log.scenario(
      'Redis killed and restarted empty twice mid-book (8 spreads): during analysis, then during soundscape generation',
      'redis-server SIGKILLed while spreads were being analysed, and again while soundscapes were being generated; started empty each time',
      async (r) => {
        const pages = twoSceneBook();
        const analysesBefore = analysisRequests();
        const predictionsBefore = predictionsCreated();
        const created = await postBook(api, { title: 'Lost in Redis', pages });
        expect(created.status).toBe(202);
        const bookId = created.body.bookId as string;

        await waitFor(() => analysisRequests() > analysesBefore, { timeoutMs: 60_000, what: 'an analysis in flight' });
        const analysing = (await db.one(`select count(*)::int as n from book_spreads where book_id = $1 and status = 'analyzing'`, [bookId])).n;
        const first = await restartRedisEmpty();
        r.held(`/readyz 503 during outage 1 ("${first.readyz503}")`);

        const predictions = predictionsCreated();
        await waitFor(() => predictionsCreated() > predictions, { timeoutMs: 120_000, what: 'a soundscape in flight after the first outage' });
        const generating = (await db.one(`select count(*)::int as n from soundscapes where book_id = $1 and status = 'generating'`, [bookId])).n;
        const second = await restartRedisEmpty();
        r.held(`/readyz 503 during outage 2 ("${second.readyz503}")`);

        const book = await waitForBook(api, bookId, 'reader', 180_000);
        const facts = await expectBookSettled(db, env.databaseUrl, bookId);
        expect(book.status).toBe('ready');
        expect(book.errors).toBeUndefined();
        expect(facts.analyzed).toBe(8);
        expect(facts.soundscapesCompleted).toBe(facts.scenes);
        expect(facts.run).toBeGreaterThanOrEqual(3);
        r.held(`book ready after reconciler runs (run ${facts.run}): ${facts.analyzed}/${facts.spreads} spreads, ${facts.soundscapesCompleted}/${facts.scenes} soundscapes, no errors, counters equal rows`);

        const analyses = analysisRequests() - analysesBefore;
        const made = predictionsCreated() - predictionsBefore;
        expect(analyses).toBeLessThanOrEqual(facts.spreads + analysing);
        expect(made).toBeLessThanOrEqual(facts.scenes + generating);
        r.held(`analysis calls ${analyses} ≤ spreads ${facts.spreads} + in flight ${analysing}; predictions ${made} ≤ scenes ${facts.scenes} + in flight ${generating}`);
        expect(generation.alive() && mixing.alive()).toBe(true);
        await waitFor(readyzOk, { timeoutMs: 30_000, what: '/readyz 200 again' });
        r.held('both worker processes survived both outages; /readyz 200 again');
        r.measure('spreads', facts.spreads);
        r.measure('scenes', facts.scenes);
        r.measure('run', facts.run);
        r.measure('analysis calls', analyses);
        r.measure('predictions', made);
        r.measure('redis down ms (1, 2)', `${first.downMs}, ${second.downMs}`);
      },
    );
  }, 300_000);
});
