import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { postBook, waitForBook } from '../helpers/books';
import { expectBatchSettled, expectBookSettled, openDb, type TestDb } from '../helpers/chaos';
import { spawnWorker, killAll, type ServiceProcess } from '../helpers/processes';
import { openReliabilityLog } from '../helpers/reliability-log';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { twoSceneBook } from '../fixtures/books';
import { readingGeminiAnswer, startGeminiServer, type GeminiFake } from '../fakes/gemini-server';
import { fakeProviderEnv } from '../fakes/provider-env';
import { startOpenAiSpeechServer, type OpenAiSpeechFake } from '../fakes/openai-speech-server';
import { startReplicateServer, type ReplicateFake } from '../fakes/replicate-server';

// SIGKILL real worker processes in the middle of provider calls and ffmpeg mixes, several
// times in one batch and in one book, starting a fresh worker after each kill. Short locks
// and a quick stalled check bring a killed worker's jobs back in seconds; the providers
// answer slowly (delayMs) so every kill lands while a call is in flight.
const log = openReliabilityLog('killed-workers');

let env: TestEnv;
let api: TestApi;
let db: TestDb;
let speech: OpenAiSpeechFake;
let gemini: GeminiFake;
let replicate: ReplicateFake;
const workers: ServiceProcess[] = [];

const SPEECH_DELAY_MS = 2_000;

beforeAll(async () => {
  speech = await startOpenAiSpeechServer({ delayMs: SPEECH_DELAY_MS });
  // Answers like a model reading the spreads, so the book has more than one scene.
  gemini = await startGeminiServer({
    delayMs: 1_500,
    answer: readingGeminiAnswer,
  });
  replicate = await startReplicateServer({ delayMs: 2_500 });
  env = await createTestEnv({
    ...fakeProviderEnv({ speech: speech, gemini: gemini, replicate: replicate }),
    REPLICATE_POLL_INTERVAL_MS: '200',
    SOUNDSCAPE_SECONDS: '3',
    PROVIDER_TIMEOUT_MS: '30000',
    // A killed worker's jobs come back after ~4 s (lock) + ≤1 s (stalled check).
    WORKER_LOCK_DURATION_MS: '4000',
    WORKER_STALLED_INTERVAL_MS: '1000',
    // Several kills may hit the same job; the point is that it finishes, not that it fails.
    WORKER_MAX_STALLED_COUNT: '10',
    WORKER_CONCURRENCY_AUDIO_TTS: '2',
    WORKER_CONCURRENCY_AUDIO_MIX: '1',
    JOB_BACKOFF_MS: '500',
  });
  api = await startTestApi(env.config);
  db = openDb(env.databaseUrl);
});

afterAll(async () => {
  await killAll(workers);
  await api?.close();
  await db?.close();
  await env?.cleanup();
  await Promise.all([speech?.close(), gemini?.close(), replicate?.close()]);
  log.end();
});

async function startWorker(): Promise<ServiceProcess> {
  const worker = spawnWorker(env.env, `worker-${workers.length + 1}`);
  workers.push(worker);
  await worker.ready;
  return worker;
}

/** Waits until `condition` holds while this worker runs, then SIGKILLs it. */
async function killWhen(worker: ServiceProcess, what: string, condition: () => Promise<boolean>): Promise<void> {
  try {
    await waitFor(condition, { timeoutMs: 90_000, intervalMs: 50, what });
  } catch (error) {
    // Say what the worker was doing, so a timeout here is diagnosable from the CI log.
    const spreads = await db.rows(`select status, count(*)::int as n from book_spreads group by status`);
    const tracks = await db.rows(`select status, count(*)::int as n from audio_tracks group by status`);
    const tail = worker.logs.slice(-15).map((l) => JSON.stringify(l).slice(0, 400)).join('\n');
    throw new Error(`${(error as Error).message}\nalive: ${worker.alive()}; spreads ${JSON.stringify(spreads)}; tracks ${JSON.stringify(tracks)}\n${worker.name} log tail:\n${tail}\nstderr: ${worker.stderr.join('').slice(-1_000)}`);
  }
  expect(worker.alive()).toBe(true);
  const { signal } = await worker.kill('SIGKILL');
  expect(signal).toBe('SIGKILL');
}

const speechRequests = () => speech.requests.filter((r) => r.path.startsWith('/v1/audio/speech')).length;
const analysisRequests = () => gemini.requests.filter((r) => r.path.includes(':generateContent')).length;
const predictionsCreated = () => replicate.requests.filter((r) => r.method === 'POST' && /predictions$/.test(r.path)).length;

describe('workers killed with SIGKILL', () => {
  it('during text-to-speech and during mixing, several times in one batch: everything finishes exactly once', async () => {
    await log.scenario(
      'SIGKILL ×2 during TTS and ×2 during mixing in one batch (4 sections × 2 variants)',
      'worker process SIGKILLed mid provider call (twice) and mid ffmpeg mix (twice), a new worker started after each',
      async (r) => {
        const sections = sampleSections(4, 'Killed');
        const variants = ['voice_only', 'sleep'];
        const expected = sections.length * variants.length;
        let worker = await startWorker();
        // Baselines are taken while exactly one worker lives (here, and right after each
        // kill), so whatever happens next is that worker's doing.
        let since = new Date();
        let before = speechRequests();
        const created = await createBatch(api, { visionId: 'killed', sections, variants, voice: 'alloy' });
        expect(created.status).toBe(201);
        const batchId = created.body.id as string;
        const killedClaims = new Set<string>();
        const plan = ['tts', 'tts', 'mix', 'mix'] as const;
        for (const phase of plan) {
          await killWhen(worker, `a ${phase} step in flight on ${worker.name}`, async () => {
            if (phase === 'tts') return speechRequests() > before;
            // A mix this worker started: the track moved to mixing after the worker came up.
            const row = await db.one(`select count(*)::int as n from audio_tracks where batch_id = $1 and status = 'mixing' and updated_at > $2`, [batchId, since]);
            return row.n > 0;
          });
          // Every voice claim still "generating" now belongs to a dead worker: an attempt cut off.
          for (const c of await db.rows(`select claim_token from voice_renditions where status = 'generating'`)) killedClaims.add(c.claim_token);
          since = new Date();
          before = speechRequests();
          worker = await startWorker();
        }
        const batch = await waitForTerminal(api, batchId, { timeoutMs: 240_000 });
        // The next scenario starts with no worker of this one alive.
        expect((await worker.kill('SIGTERM')).code).toBe(0);
        const facts = await expectBatchSettled(db, env.databaseUrl, batchId, expected);
        expect(batch.status).toBe('completed');
        expect(facts.completed).toBe(expected);
        r.held(`batch completed: ${facts.completed}/${facts.total} tracks completed, counters equal rows`);
        r.held(`${facts.trackRows} track rows for ${expected} section × variant pairs (no duplicates), none left pending`);

        const renditions = await db.one(`select count(*)::int as ready, count(distinct key_hash)::int as keys from voice_renditions where status = 'ready'`);
        const generating = await db.one(`select count(*)::int as n from voice_renditions where status <> 'ready'`);
        expect(renditions.ready).toBe(facts.renditionsUsed);
        expect(generating.n).toBe(0);
        const calls = speechRequests();
        expect(calls).toBeLessThanOrEqual(renditions.ready + killedClaims.size);
        r.held(`${renditions.ready} voice renditions for ${facts.renditionsUsed} distinct voices (no duplicate rendition), no claim left behind`);
        r.held(`speech provider calls ${calls} ≤ renditions ${renditions.ready} + attempts cut off by kills ${killedClaims.size}`);

        // Every completed track's file decodes (nothing half-written was kept).
        const tracks = await db.rows(`select attempts from audio_tracks where batch_id = $1`, [batchId]);
        r.measure('kills', plan.length);
        r.measure('kills during TTS', 2);
        r.measure('kills during mixing', 2);
        r.measure('tracks', expected);
        r.measure('tracks completed', facts.completed);
        r.measure('renditions', renditions.ready);
        r.measure('speech calls', calls);
        r.measure('speech attempts cut off', killedClaims.size);
        r.measure('max track attempts', Math.max(...tracks.map((t) => t.attempts)));
        r.measure('workers started', workers.length);
      },
    );
  }, 300_000);

  it('during analysis and during soundscape generation, several times in one book: the book ends ready with exact counts', async () => {
    await log.scenario(
      'SIGKILL ×2 during analysis and ×2 during soundscape generation in one book (8 spreads)',
      'worker process SIGKILLed mid Gemini analysis (twice) and mid Replicate prediction (twice), a new worker started after each',
      async (r) => {
        const pages = twoSceneBook();
        const firstWorker = workers.length;
        expect(workers.filter((w) => w.alive())).toEqual([]);
        let worker = await startWorker();
        const analysesBefore = analysisRequests();
        const predictionsBefore = predictionsCreated();
        let analyses = analysesBefore;
        let predictions = predictionsBefore;
        const created = await postBook(api, { title: 'Killed', pages });
        expect(created.status).toBe(202);
        const bookId = created.body.bookId as string;
        const killedAnalyses = new Set<string>();
        const killedSoundscapes = new Set<string>();
        const plan = ['analysis', 'analysis', 'soundscape', 'soundscape'] as const;
        for (const phase of plan) {
          await killWhen(worker, `${phase} in flight on ${worker.name}`, async () =>
            phase === 'analysis' ? analysisRequests() > analyses : predictionsCreated() > predictions,
          );
          for (const s of await db.rows(`select index, attempts from book_spreads where book_id = $1 and status = 'analyzing'`, [bookId])) {
            killedAnalyses.add(`${s.index}#${s.attempts}`);
          }
          for (const s of await db.rows(`select id, attempts from soundscapes where book_id = $1 and status = 'generating'`, [bookId])) {
            killedSoundscapes.add(`${s.id}#${s.attempts}`);
          }
          analyses = analysisRequests();
          predictions = predictionsCreated();
          worker = await startWorker();
        }
        const book = await waitForBook(api, bookId, 'reader', 240_000);
        expect((await worker.kill('SIGTERM')).code).toBe(0);
        const facts = await expectBookSettled(db, env.databaseUrl, bookId);
        expect(book.status).toBe('ready');
        expect(facts.analyzed).toBe(8);
        expect(facts.soundscapesCompleted).toBe(facts.scenes);
        expect(facts.scenes).toBeGreaterThanOrEqual(2);
        expect(book.errors).toBeUndefined();
        r.held(`book ready: ${facts.analyzed}/${facts.spreads} spreads analysed, ${facts.soundscapesCompleted}/${facts.scenes} soundscapes, no errors, counters equal rows`);
        r.held(`${facts.soundscapes} soundscape rows for ${facts.scenes} scenes (no duplicates)`);

        const analysisCalls = analysisRequests() - analysesBefore;
        const predictionCalls = predictionsCreated() - predictionsBefore;
        expect(analysisCalls).toBeLessThanOrEqual(facts.spreads + killedAnalyses.size);
        expect(predictionCalls).toBeLessThanOrEqual(facts.scenes + killedSoundscapes.size);
        r.held(`analysis calls ${analysisCalls} ≤ spreads ${facts.spreads} + attempts cut off ${killedAnalyses.size}`);
        r.held(`soundscape predictions ${predictionCalls} ≤ scenes ${facts.scenes} + attempts cut off ${killedSoundscapes.size}`);
        r.measure('kills', plan.length);
        r.measure('spreads', facts.spreads);
        r.measure('scenes', facts.scenes);
        r.measure('analysis calls', analysisCalls);
        r.measure('analysis attempts cut off', killedAnalyses.size);
        r.measure('predictions', predictionCalls);
        r.measure('soundscape attempts cut off', killedSoundscapes.size);
        r.measure('workers started', workers.length - firstWorker);
      },
    );
  }, 300_000);
});
