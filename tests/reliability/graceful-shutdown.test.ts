import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { expectBatchSettled, openDb, type TestDb } from '../helpers/chaos';
import { killAll, spawnWorker, type ServiceProcess } from '../helpers/processes';
import { openReliabilityLog } from '../helpers/reliability-log';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { startOpenAiSpeechServer, type OpenAiSpeechFake } from '../fakes/openai-speech-server';

// SIGTERM (twice, as an impatient orchestrator does) to a worker process while it is in the
// middle of speech synthesis, and to the next one in the middle of a mix. A worker stops
// taking jobs, finishes what it holds and exits 0; the worker started next carries on.
// Nothing is redone: no track is attempted twice and no voice is synthesized twice.
const log = openReliabilityLog('graceful-shutdown');

let env: TestEnv;
let api: TestApi;
let db: TestDb;
let speech: OpenAiSpeechFake;
const workers: ServiceProcess[] = [];

beforeAll(async () => {
  speech = await startOpenAiSpeechServer({ delayMs: 2_000 });
  env = await createTestEnv({
    SPEECH_PROVIDER: 'openai',
    OPENAI_API_KEY: 'sk-test',
    OPENAI_BASE_URL: `${speech.url}/v1`,
    PROVIDER_TIMEOUT_MS: '20000',
    WORKER_CONCURRENCY_AUDIO_TTS: '2',
    WORKER_CONCURRENCY_AUDIO_MIX: '1',
    // Were a job cut off, it would come back as stalled within ~10 s and show as a second attempt.
    WORKER_LOCK_DURATION_MS: '8000',
    WORKER_STALLED_INTERVAL_MS: '2000',
  });
  api = await startTestApi(env.config);
  db = openDb(env.databaseUrl);
});

afterAll(async () => {
  await killAll(workers);
  await api?.close();
  await db?.close();
  await env?.cleanup();
  await speech?.close();
  log.end();
});

async function startWorker(): Promise<ServiceProcess> {
  const worker = spawnWorker(env.env, `worker-${workers.length + 1}`);
  workers.push(worker);
  await worker.ready;
  return worker;
}

const speechRequests = () => speech.requests.filter((r) => r.path.startsWith('/v1/audio/speech')).length;

describe('SIGTERM to a worker in the middle of a batch', () => {
  it('loses nothing: in-flight jobs finish, the worker exits 0, the next worker carries on', async () => {
    await log.scenario(
      'SIGTERM (sent twice) during TTS, then to the next worker during mixing, in one batch (4 sections × 2 variants)',
      'worker process sent SIGTERM twice mid provider call; the next one SIGTERM twice mid ffmpeg mix; a fresh worker started right after each signal',
      async (r) => {
        const sections = sampleSections(4, 'Graceful');
        const variants = ['voice_only', 'sleep'];
        const expected = sections.length * variants.length;
        let worker = await startWorker();
        const before = speechRequests();
        const created = await createBatch(api, { visionId: 'graceful', sections, variants, voice: 'sage' });
        expect(created.status).toBe(201);
        const batchId = created.body.id as string;
        const exits: Array<{ phase: string; code: number | null; ms: number; inFlight: number }> = [];

        for (const phase of ['tts', 'mix'] as const) {
          const since = new Date();
          const requests = speechRequests();
          await waitFor(
            async () => {
              if (phase === 'tts') return speechRequests() > requests;
              const row = await db.one(`select count(*)::int as n from audio_tracks where batch_id = $1 and status = 'mixing' and updated_at > $2`, [batchId, since]);
              return row.n > 0;
            },
            { timeoutMs: 90_000, intervalMs: 50, what: `${phase} in flight on ${worker.name}` },
          );
          const inFlight = (await db.one(`select count(*)::int as n from audio_tracks where batch_id = $1 and status in ('generating', 'mixing')`, [batchId])).n;
          const signalled = Date.now();
          const stopping = worker;
          const exitedAt = stopping.exited.then(() => Date.now());
          stopping.child.kill('SIGTERM');
          stopping.child.kill('SIGTERM');
          // The next worker starts while the old one is still finishing.
          worker = await startWorker();
          const { code } = await stopping.exited;
          exits.push({ phase, code, ms: (await exitedAt) - signalled, inFlight });
          expect(code, `${stopping.name} exit code`).toBe(0);
          expect(stopping.logs.some((l) => l.msg === 'stopped'), `${stopping.name} logged "stopped"`).toBe(true);
          expect(stopping.errors(), `${stopping.name} errors`).toEqual([]);
        }

        const batch = await waitForTerminal(api, batchId, { timeoutMs: 180_000 });
        const facts = await expectBatchSettled(db, env.databaseUrl, batchId, expected);
        expect(batch.status).toBe('completed');
        const attempts = await db.rows(`select attempts from audio_tracks where batch_id = $1`, [batchId]);
        expect(attempts.every((t) => t.attempts === 1), JSON.stringify(attempts)).toBe(true);
        const renditions = (await db.one(`select count(*)::int as n from voice_renditions where status = 'ready'`)).n;
        const calls = speechRequests() - before;
        expect(calls).toBe(renditions);
        const jobs = await api.ctx.queues['audio-tts'].getJobs(['completed'], 0, 100);
        const mixes = await api.ctx.queues['audio-mix'].getJobs(['completed'], 0, 100);
        expect(jobs.filter((j) => j.data.batchId === batchId).every((j) => j.attemptsMade === 1 && !j.stalledCounter)).toBe(true);
        expect(mixes.filter((j) => j.data.batchId === batchId).every((j) => j.attemptsMade === 1 && !j.stalledCounter)).toBe(true);

        for (const e of exits) r.held(`SIGTERM ×2 during ${e.phase} with ${e.inFlight} track(s) in flight: exited 0 after ${(e.ms / 1000).toFixed(1)} s, logged "stopped", no errors`);
        r.held(`batch completed ${facts.completed}/${facts.total}, counters equal rows; every track attempted once, no job stalled or retried`);
        r.held(`speech calls ${calls} = renditions ${renditions}: nothing synthesized twice`);
        r.measure('tracks', expected);
        r.measure('exit codes', exits.map((e) => e.code).join(', '));
        r.measure('shutdown seconds', exits.map((e) => (e.ms / 1000).toFixed(1)).join(', '));
        r.measure('speech calls', calls);
      },
    );
  }, 300_000);
});
