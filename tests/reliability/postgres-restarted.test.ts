import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'drizzle-orm';
import { createDb } from '@soundqueue/shared/db/client';
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
      'PostgreSQL stopped (immediate, like a crash) and started again, three times in one batch (6 sections × 2 variants)',
      'the database cluster stopped with -m immediate while tracks were being synthesized and mixed (after 2, 5 and 8 of 12 tracks); started again once the worker had seen failures',
      async (r) => {
        const sections = sampleSections(6, 'Restarted');
        const variants = ['voice_only', 'sleep'];
        const created = await createBatch(api, { visionId: 'pg-restart', sections, variants, voice: 'coral' });
        expect(created.status).toBe(201);
        const batchId = created.body.id as string;
        const logsBefore = worker.logs.length;
        const outages: number[] = [];
        let readyzMessage = '';
        let duringStatus = 0;
        for (const threshold of [2, 5, 8]) {
          await waitFor(async () => (await db.one(`select tracks_completed from audio_generation_batches where id = $1`, [batchId])).tracks_completed >= threshold, {
            timeoutMs: 120_000,
            what: `${threshold} tracks completed`,
          });
          const before = await db.one(`select tracks_pending from audio_generation_batches where id = $1`, [batchId]);
          expect(before.tracks_pending).toBeGreaterThan(0);
          const failedBefore = worker.count('job attempt failed');

          const stoppedAt = Date.now();
          await postgres.stop('immediate');
          const down = await waitFor(async () => {
            const answer = await readyz();
            return answer.status === 503 ? answer : null;
          }, { timeoutMs: 30_000, what: '/readyz 503' });
          expect(down.body.error.message).toMatch(/postgres/);
          expect(down.body.error.details.redis).toBe('ok');
          readyzMessage = down.body.error.message;
          // Another route while the database is away answers an error, not a hang.
          const during = await api.request(`/v1/audio/batches/${batchId}`);
          duringStatus = during.status;
          // A store that is down is a 503 (retry later), never a 500.
          expect(during.status).toBe(503);
          // Keep it down until the worker has felt it: two attempts failed on the database
          // (with 1 s backoff, some are retries of the same job).
          await waitFor(() => worker.count('job attempt failed') >= failedBefore + 2 || !worker.alive(), {
            timeoutMs: 60_000,
            what: 'job attempts failing on the stopped database',
          });
          expect(worker.alive(), `the worker process died during the outage:\n${worker.stderr.join('').slice(-1_500)}`).toBe(true);
          await postgres.start();
          outages.push(Date.now() - stoppedAt);
          await waitFor(async () => (await readyz()).status === 200, { timeoutMs: 30_000, what: '/readyz 200 again' });
        }
        r.held(`/readyz answered 503 during each outage ("${readyzMessage}", redis ok) and 200 after; other routes answered ${duringStatus} meanwhile, no hang`);

        const batch = await waitForTerminal(api, batchId, { timeoutMs: 180_000 });
        const facts = await expectBatchSettled(db, databaseUrl, batchId, sections.length * variants.length);
        const failedTracks = batch.tracks.filter((t: any) => t.status !== 'completed').map((t: any) => `${t.section_key}/${t.variant_id}: ${t.error_message}`);
        expect(batch.status, failedTracks.join('\n')).toBe('completed');
        r.held(`batch completed: ${facts.completed}/${facts.total} tracks, counters equal rows, no duplicate or pending tracks`);

        const failures = worker.logs.slice(logsBefore).filter((l) => l.msg === 'job attempt failed');
        const ttsFailures = failures.filter((l) => l.queue === 'audio-tts').length;
        const renditions = (await db.one(`select count(*)::int as n from voice_renditions where status = 'ready'`)).n;
        const calls = speech.requests.filter((q) => q.path.startsWith('/v1/audio/speech')).length;
        expect(renditions).toBe(facts.renditionsUsed);
        expect(calls).toBeLessThanOrEqual(renditions + ttsFailures);
        expect(worker.alive()).toBe(true);
        const examples = [...new Set(failures.map((f) => String(f.err).replace(/\s+/g, ' ').slice(0, 60)))].slice(0, 2);
        r.held(`${failures.length} job attempts failed on the outages and were retried with backoff (e.g. "${examples.join('", "')}")`);
        r.held(`speech calls ${calls} ≤ renditions ${renditions} + speech attempts failed ${ttsFailures}; the worker process stayed up through all three`);
        r.measure('tracks', facts.total);
        r.measure('outages', outages.length);
        r.measure('outage ms', outages.join(', '));
        r.measure('failed attempts', failures.length);
        r.measure('speech calls', calls);
        r.measure('renditions', renditions);
      },
    );
  }, 360_000);

  it('a transaction open when PostgreSQL goes away fails; the process holding it survives', async () => {
    await log.scenario(
      'PostgreSQL stopped while a service holds a client inside a transaction',
      'the cluster stopped (-m immediate) between two statements of an open transaction on the services\' own pool (createDb)',
      async (r) => {
        // The services' pool, in this process: an unhandled 'error' from the checked-out
        // client would crash it (and fail the run as an uncaught exception).
        const handle = createDb(databaseUrl, { max: 2 });
        let release: () => void = () => {};
        const gate = new Promise<void>((resolve) => (release = resolve));
        let opened: () => void = () => {};
        const inside = new Promise<void>((resolve) => (opened = resolve));
        const uncaught: unknown[] = [];
        const onUncaught = (error: unknown) => uncaught.push(error);
        process.on('uncaughtException', onUncaught);
        try {
          const transaction = handle.db
            .transaction(async (tx) => {
              await tx.execute(sql`select 1`);
              opened();
              await gate; // other work between statements: a provider call, ffmpeg
              await tx.execute(sql`select 2`);
            })
            .then(() => 'committed', (error: Error) => `rejected: ${error.message.split('\n')[0]}`);
          await inside;
          await postgres.stop('immediate');
          await waitFor(async () => (await readyz()).status === 503, { timeoutMs: 30_000, what: '/readyz 503' });
          release();
          const outcome = await transaction;
          expect(outcome).toMatch(/^rejected/);
          await postgres.start();
          // The same pool works again once the database is back.
          await waitFor(async () => (await handle.db.execute(sql`select 1 as ok`)).rows.length === 1, { timeoutMs: 30_000, what: 'the pool to reconnect' });
          expect(uncaught).toEqual([]);
          r.held(`the transaction ${outcome.slice(0, 60)}; no uncaught 'error' event; the same pool answered again after the restart`);
        } finally {
          process.off('uncaughtException', onUncaught);
          await handle.close().catch(() => {});
        }
      },
    );
  }, 120_000);
});
