import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createApiContext } from '@soundqueue/api';
import { createBatch } from '../apps/api/src/batches/batch-service';
import { startOpenAiSpeechServer } from '../tests/fakes/openai-speech-server';
import { createTestEnv } from '../tests/helpers/services';
import { batchBody, SECTIONS_PER_BATCH } from './lib/audio-flow';
import { now, onCleanup, readProcStat, REPO_DIR, round, serviceCpuSeconds, sleep, withTimeout, type BenchOptions, type BenchResult } from './lib/common';
import { CONCURRENCY, concurrencyEnv } from './orchestration';

// Benchmark 5: scaling. Benchmark 1's flow run by 1, 2 and 4 worker processes (the real
// `node --import tsx apps/worker/src/main.ts`, as deployed), each with benchmark 1's
// per-queue concurrency. There is no env switch for an instant speech provider in a worker
// process, so speech is the OpenAI provider against the local wire-format fake with no delay
// and a short text per track (0.9 s of audio); mixing is real (ffmpeg).
//
// Each step runs the same fixed workload from an empty pipeline: with the queues paused the
// step's processes are started (a start-up neither slows running work nor is slowed by it),
// the step's batches are created, the queues resumed, and the clock runs until the last of
// those tracks has finished. tracks/s is tracks over that time, and CPU is counted over the
// same time, so CPU per track covers exactly the tracks counted. (An earlier version counted
// tracks finished in a window of a kept-full pipeline; speech ran ahead of mixing there, so
// the CPU in a window paid for voices of tracks finished after it, and CPU per track halved
// from the first steps to the last.) The full run ends by running the first step again, to
// show how far the machine's load moved.

interface WorkerProcess {
  child: ChildProcess;
  pid: number;
  stop(): Promise<void>;
}

async function startWorkerProcess(env: Record<string, string>, index: number): Promise<WorkerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'apps/worker/src/main.ts'], {
    cwd: REPO_DIR,
    env: { ...process.env, ...env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail: string[] = [];
  const keep = (line: string) => {
    tail.push(line);
    if (tail.length > 20) tail.shift();
  };
  let onStarted!: () => void;
  let onFailed!: (error: Error) => void;
  const started = new Promise<void>((resolve, reject) => {
    onStarted = resolve;
    onFailed = reject;
  });
  let buffer = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buffer += chunk;
    let cut: number;
    while ((cut = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 1);
      if (line.includes('"msg":"worker started"')) onStarted();
      else if (!line.includes('"msg":"job attempt failed"') || tail.length < 20) keep(line);
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => keep(chunk.trim()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  void exited.then((code) => onFailed(new Error(`worker process ${index} exited (${code}) before it started:\n${tail.join('\n')}`)));

  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    // SIGTERM: the worker finishes its jobs in progress (up to 30 s), then exits.
    child.kill('SIGTERM');
    try {
      await withTimeout(exited, 35_000, `worker process ${child.pid} to stop`);
    } catch {
      child.kill('SIGKILL');
      await exited;
    }
  };
  onCleanup(`worker process ${child.pid}`, async () => {
    await stop();
    // The worker's scratch directory (createWorkerContext) outlives it.
    await rm(join(tmpdir(), `soundqueue-${child.pid}`), { recursive: true, force: true });
  });
  await withTimeout(started, 60_000, `worker process ${index} to start`);
  return { child, pid: child.pid!, stop };
}

interface Round {
  processes: number;
  /** The first step measured again at the end. */
  repeat: boolean;
  startSeconds: number;
  runSeconds: number;
  tracks: number;
  tracksFailed: number;
  tracksPerSecond: number;
  workerCpuCores: number;
  postgresRedisCpuCores: number;
  cpuMsPerTrack: number;
}

/** CPU seconds of a worker process and of the ffmpeg children it has reaped. */
async function processCpu(pid: number): Promise<number> {
  const s = await readProcStat(pid);
  return s.utime + s.stime + s.cutime + s.cstime;
}

export async function scaling(options: BenchOptions): Promise<BenchResult> {
  // The quick run stops at 2 processes: each start of a worker process costs seconds of CPU
  // (tsx compiling the worker), which the quick run's minute cannot afford twice more.
  const steps = options.scalingSteps ?? (options.quick ? [1, 2] : [1, 2, 4]);
  // The same work in every step: long enough that ramp-up (mixing starts after the first
  // voices) and the tail (the last few mixes) are a small share of it.
  const batchesPerStep = options.quick ? 1 : 8;
  // The quick run's one batch has half the sections: a mix costs a CPU second or more here
  // whatever the track's length, and a slow host must still finish the quick run in a minute.
  const sectionsPerBatch = options.quick ? SECTIONS_PER_BATCH / 2 : SECTIONS_PER_BATCH;

  const speech = await startOpenAiSpeechServer({ delayMs: 0 });
  onCleanup('openai speech fake', () => speech.close());
  const env = await createTestEnv({
    LOG_LEVEL: 'error',
    DATABASE_POOL_SIZE: '10',
    SPEECH_PROVIDER: 'openai',
    OPENAI_API_KEY: 'bench',
    OPENAI_BASE_URL: `${speech.url}/v1`,
    WORKER_QUEUES: 'audio-tts,audio-mix,audio-batch',
    ...concurrencyEnv(CONCURRENCY),
  });
  onCleanup(`scaling env ${env.prefix}`, () => env.cleanup());
  const api = await createApiContext(env.config);
  onCleanup('scaling api context', () => api.close());
  const pool = new pg.Pool({ connectionString: env.databaseUrl, max: 1 });
  onCleanup('scaling pool', () => pool.end());

  let batchCounter = 0;
  /** Tracks of these batches not yet terminal, and failed. */
  const counts = async (batchIds: string[]) => {
    const { rows } = await pool.query<{ open: number; failed: number }>(
      `select count(*) filter (where status in ('pending', 'generating', 'mixing'))::int as open,
              count(*) filter (where status = 'failed')::int as failed
         from audio_tracks where batch_id = any($1)`,
      [batchIds],
    );
    return rows[0]!;
  };
  const flowQueues = [api.queues['audio-tts'], api.queues['audio-mix'], api.queues['audio-batch']];
  const pause = async () => {
    await Promise.all(flowQueues.map((q) => q.pause()));
    // Paused queues hand out no new jobs; wait for the ones in progress.
    for (;;) {
      const active = await Promise.all(flowQueues.map((q) => q.getActiveCount()));
      if (active.every((n) => n === 0)) return;
      await sleep(50);
    }
  };
  const resume = () => Promise.all(flowQueues.map((q) => q.resume()));

  const processes: WorkerProcess[] = [];
  const rounds: Round[] = [];
  // Up the steps, then (full run) back to the first one: the first step measured twice shows
  // how much the machine's load moved in between, and the baseline is their mean.
  const plan = options.quick || steps.length < 2 ? steps : [...steps, steps[0]!];
  for (const [index, target] of plan.entries()) {
    const startT = now();
    await pause();
    const adding: Promise<WorkerProcess>[] = [];
    for (let i = processes.length; i < target; i += 1) adding.push(startWorkerProcess(env.env, i));
    processes.push(...(await Promise.all(adding)));
    await Promise.all(processes.splice(target).map((p) => p.stop()));
    const batchIds: string[] = [];
    for (let i = 0; i < batchesPerStep; i += 1) {
      const { batch } = await createBatch(api, 'bench-user', batchBody('scale', batchCounter++, sectionsPerBatch, ['voice_only'], { shortText: true }), undefined);
      batchIds.push(batch.id);
    }
    const startSeconds = (now() - startT) / 1000;

    const cpu0 = await Promise.all(processes.map((p) => processCpu(p.pid)));
    const svc0 = await serviceCpuSeconds();
    const t0 = now();
    await resume();
    let last = await counts(batchIds);
    while (last.open > 0) {
      if ((now() - t0) / 1000 > 600) throw new Error(`scaling: ${last.open} tracks still open after 600 s with ${target} processes`);
      await sleep(50);
      last = await counts(batchIds);
    }
    const seconds = (now() - t0) / 1000;
    const cpu1 = await Promise.all(processes.map((p) => processCpu(p.pid)));
    const svc1 = await serviceCpuSeconds();

    const tracks = batchIds.length * sectionsPerBatch;
    const workerCpu = cpu1.reduce((a, c, i) => a + c - cpu0[i]!, 0);
    const serviceCpu = svc1.postgres - svc0.postgres + (svc1.redis - svc0.redis);
    rounds.push({
      processes: target,
      repeat: index >= steps.length,
      startSeconds: round(startSeconds, 2),
      runSeconds: round(seconds, 2),
      tracks,
      tracksFailed: last.failed,
      tracksPerSecond: round(tracks / seconds, 2),
      workerCpuCores: round(workerCpu / seconds, 2),
      postgresRedisCpuCores: round(serviceCpu / seconds, 2),
      cpuMsPerTrack: round(((workerCpu + serviceCpu) * 1000) / tracks, 0),
    });
  }
  // Stop the workers now (not at cleanup) so their shutdown is part of this benchmark's time.
  await Promise.all(processes.map((p) => p.stop()));

  const firsts = rounds.filter((r) => r.processes === steps[0]);
  const base = firsts.reduce((a, r) => a + r.tracksPerSecond, 0) / firsts.length;
  const scale = rounds.map((r) => ({ ...r, speedup: base > 0 ? round(r.tracksPerSecond / base, 2) : null }));
  return {
    name: 'scaling',
    headlines: scale.map((r) => ({
      benchmark: '5 scaling',
      measure: `${r.processes} worker process${r.processes === 1 ? '' : 'es'}${r.repeat ? ' (again)' : ''}: tracks/s (× ${firsts.length > 1 ? 'mean of the first step\'s runs' : 'first step'}), CPU cores busy`,
      value: `${r.tracksPerSecond} (${r.speedup}×), ${round(r.workerCpuCores + r.postgresRedisCpuCores, 2)}`,
      target: '',
      met: r.tracksFailed === 0 ? null : false,
    })),
    notes: [
      `Per step the same work from an empty pipeline: ${batchesPerStep} batch(es) of ${sectionsPerBatch} tracks, timed from resuming the queues to the last track finished; each process runs audio-tts ${CONCURRENCY.tts}, audio-mix ${CONCURRENCY.mix}, audio-batch ${CONCURRENCY.batch} at once; speech from the OpenAI fake (no delay, 0.9 s of audio), real ffmpeg mixing (voice_only).`,
      `CPU cores busy = worker processes with their ffmpeg children, plus PostgreSQL and Redis, over that time; this machine has ${(await import('node:os')).availableParallelism()}.`,
    ],
    data: {
      steps,
      tracksPerStep: batchesPerStep * sectionsPerBatch,
      concurrencyPerProcess: CONCURRENCY,
      rounds: scale,
      batchesCreated: batchCounter,
    },
  };
}
