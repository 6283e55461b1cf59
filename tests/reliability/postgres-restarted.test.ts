import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMigrations } from '@soundqueue/shared/db/migrate';
import { loadConfig } from '@soundqueue/shared/config';
import { readJson, startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { expectBatchSettled, openDb, type TestDb } from '../helpers/chaos';
import { killAll, spawnWorker, type ServiceProcess } from '../helpers/processes';
import { startOwnPostgres, type OwnPostgres } from '../helpers/postgres-server';
import { openReliabilityLog } from '../helpers/reliability-log';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { startOpenAiSpeechServer, type OpenAiSpeechFake } from '../fakes/openai-speech-server';

// A private PostgreSQL cluster is stopped (as if it crashed) and started again in the middle
// of a batch, under a real worker process and an in-process API. Jobs that hit the outage
// fail their attempt and back off (JOB_ATTEMPTS × JOB_BACKOFF_MS cover the outage); the
// batch finishes once the database is back. /readyz says which store is missing.
const log = openReliabilityLog('postgres-restarted');

let postgres: OwnPostgres;
let databaseUrl: string;
let env: TestEnv;
let api: TestApi;
let db: TestDb;
let speech: OpenAiSpeechFake;
let worker: ServiceProcess;

beforeAll(async () => {
  postgres = await startOwnPostgres();
  databaseUrl = postgres.url('soundqueue_restarted');
  await runMigrations(databaseUrl);
  speech = await startOpenAiSpeechServer({ delayMs: 1_000 });
  env = await createTestEnv({
    DATABASE_URL: databaseUrl,
    SPEECH_PROVIDER: 'openai',
    OPENAI_API_KEY: 'sk-test',
    OPENAI_BASE_URL: `${speech.url}/v1`,
    PROVIDER_TIMEOUT_MS: '20000',
    WORKER_CONCURRENCY_AUDIO_TTS: '2',
    // Six attempts from 1 s (doubling, ±50 %): a job keeps trying for 15–45 s.
    JOB_ATTEMPTS: '6',
    JOB_BACKOFF_MS: '1000',
    WORKER_LOCK_DURATION_MS: '5000',
    WORKER_STALLED_INTERVAL_MS: '2000',
  });
  expect(env.config.DATABASE_URL).toBe(databaseUrl);
  api = await startTestApi(loadConfig(env.env));
  db = openDb(databaseUrl);
  worker = spawnWorker(env.env);
  await worker.ready;
});

afterAll(async () => {
  await killAll([worker]);
  await api?.close();
  await db?.close();
  await env?.cleanup();
  await speech?.close();
  await postgres?.destroy();
  log.end();
});

async function readyz(): Promise<{ status: number; body: any }> {
  const res = await fetch(`${api.url}/readyz`);
  return { status: res.status, body: await readJson(res) };
}

describe('PostgreSQL restarted mid-batch', () => {
  it('jobs back off, the batch finishes with exact counts, and /readyz is 503 (postgres) while it is down', async () => {
    await log.scenario(
      'PostgreSQL stopped (immediate, like a crash) and started again mid-batch (6 sections × 2 variants)',
      'the database cluster stopped with -m immediate while tracks were being synthesized and mixed; started again after workers saw failures',
      async (r) => {
        const sections = sampleSections(6, 'Restarted');
        const variants = ['voice_only', 'sleep'];
        const created = await createBatch(api, { visionId: 'pg-restart', sections, variants, voice: 'coral' });
        expect(created.status).toBe(201);
        const batchId = created.body.id as string;
        await waitFor(async () => (await db.one(`select tracks_completed from audio_generation_batches where id = $1`, [batchId])).tracks_completed >= 2, {
          timeoutMs: 120_000,
          what: 'two tracks completed',
        });
        const before = await db.one(`select tracks_completed, tracks_pending from audio_generation_batches where id = $1`, [batchId]);
        expect(before.tracks_pending).toBeGreaterThan(0);
        const failedBefore = worker.logs.filter((l) => l.msg === 'job attempt failed').length;

        const stoppedAt = Date.now();
        await postgres.stop('immediate');
        const down = await waitFor(async () => {
          const answer = await readyz();
          return answer.status === 503 ? answer : null;
        }, { timeoutMs: 30_000, what: '/readyz 503' });
        expect(down.body.error.message).toMatch(/postgres/);
        expect(down.body.error.details.redis).toBe('ok');
        r.held(`/readyz answered 503 while the database was down: "${down.body.error.message}" (redis still ok)`);
        // Another route while the database is away answers an error, not a hang.
        const during = await api.request(`/v1/audio/batches/${batchId}`);
        r.measure('GET batch during outage', during.status);
        expect(during.status).toBeGreaterThanOrEqual(500);
        // Keep it down until the worker has felt it: three attempts failed on the database
        // (with 1 s backoff, some are retries of the same job).
        await waitFor(() => worker.logs.filter((l) => l.msg === 'job attempt failed').length >= failedBefore + 3, {
          timeoutMs: 60_000,
          what: 'job attempts failing on the stopped database',
        });
        await postgres.start();
        const outageMs = Date.now() - stoppedAt;
        await waitFor(async () => (await readyz()).status === 200, { timeoutMs: 30_000, what: '/readyz 200 again' });
        r.held('/readyz 200 again once PostgreSQL was back');

        const batch = await waitForTerminal(api, batchId, { timeoutMs: 180_000 });
        const facts = await expectBatchSettled(db, databaseUrl, batchId, sections.length * variants.length);
        const failedTracks = batch.tracks.filter((t: any) => t.status !== 'completed').map((t: any) => `${t.section_key}/${t.variant_id}: ${t.error_message}`);
        expect(batch.status, failedTracks.join('\n')).toBe('completed');
        r.held(`batch completed: ${facts.completed}/${facts.total} tracks, counters equal rows, no duplicate or pending tracks`);

        const failures = worker.logs.filter((l) => l.msg === 'job attempt failed').slice(failedBefore);
        const ttsFailures = failures.filter((l) => l.queue === 'audio-tts').length;
        const renditions = (await db.one(`select count(*)::int as n from voice_renditions where status = 'ready'`)).n;
        const calls = speech.requests.filter((q) => q.path.startsWith('/v1/audio/speech')).length;
        expect(renditions).toBe(facts.renditionsUsed);
        expect(calls).toBeLessThanOrEqual(renditions + ttsFailures);
        expect(worker.alive()).toBe(true);
        const examples = [...new Set(failures.map((f) => String(f.err).replace(/\s+/g, ' ').slice(0, 60)))].slice(0, 2);
        r.held(`${failures.length} job attempts failed on the outage and were retried with backoff (e.g. "${examples.join('", "')}")`);
        r.held(`speech calls ${calls} ≤ renditions ${renditions} + speech attempts failed ${ttsFailures}; the worker process stayed up`);
        r.measure('tracks', facts.total);
        r.measure('outage ms', outageMs);
        r.measure('failed attempts', failures.length);
        r.measure('speech calls', calls);
        r.measure('renditions', renditions);
      },
    );
  }, 300_000);
});
