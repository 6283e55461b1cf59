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
// and a short text per track (about 0.6 s of audio); mixing is real, as in benchmark 1.
//
// Throughput is measured in steady state: the queue is kept full, processes are added one
// step at a time (1, then 2, then 4), and after each step settles the tracks finished in a
// fixed window are counted. Ramp-up and the last batch's tail never enter the figure. While
// new processes start, the three queues are paused (jobs in progress finish, the backlog
// stays), so a start-up is not slowed by running work, nor running work by a start-up. The
// full run ends by measuring the first step again, to show how far the machine's load moved.

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
  settleSeconds: number;
  windowSeconds: number;
  tracksFinished: number;
  tracksFailed: number;
  tracksPerSecond: number;
  workerCpuCores: number;
  postgresRedisCpuCores: number;
  cpuMsPerTrack: number;
  backlogHeld: boolean;
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
  // Settle: after a step, wait for the pipeline (speech, then mixing) to deliver tracks
  // again; window: at least this long and this many tracks (the quick run's windows are
  // short, so it also waits for a few tracks, which keeps its rate from being 0 or 1 track).
  const settle = options.quick ? { seconds: 0.5, tracks: 1 } : { seconds: 10, tracks: 14 };
  const window = options.quick ? { seconds: 1.5, tracks: 3 } : { seconds: 30, tracks: 14 };
  // Enough waiting work that no window runs dry: a few times the fastest rate seen here.
  const backlog = (options.quick ? 70 : 420) * Math.max(1, Math.max(...steps) / 4);

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
  const counts = async () => {
    const { rows } = await pool.query<{ pending: number; finished: number; failed: number }>(
      `select count(*) filter (where status in ('pending', 'generating', 'mixing'))::int as pending,
              count(*) filter (where status in ('completed', 'failed'))::int as finished,
              count(*) filter (where status = 'failed')::int as failed
         from audio_tracks`,
    );
    return rows[0]!;
  };
  const topUp = async () => {
    let { pending } = await counts();
    while (pending < backlog) {
      await createBatch(api, 'bench-user', batchBody('scale', batchCounter++, SECTIONS_PER_BATCH, ['voice_only'], { shortText: true }), undefined);
      pending += SECTIONS_PER_BATCH;
    }
  };

  /** Waits until at least `seconds` have passed and `tracks` more have finished; returns the counts then. */
  const until = async (goal: { seconds: number; tracks: number }, maxSeconds: number, from?: number) => {
    const t0 = now();
    const base = from ?? (await counts()).finished;
    for (;;) {
      const c = await counts();
      const elapsed = (now() - t0) / 1000;
      if ((elapsed >= goal.seconds && c.finished - base >= goal.tracks) || elapsed > maxSeconds) return c;
      await sleep(50);
    }
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
    if (processes.length > 0) await pause();
    await topUp();
    const adding: Promise<WorkerProcess>[] = [];
    for (let i = processes.length; i < target; i += 1) adding.push(startWorkerProcess(env.env, i));
    processes.push(...(await Promise.all(adding)));
    await Promise.all(processes.splice(target).map((p) => p.stop()));
    await resume();
    const startSeconds = (now() - startT) / 1000;
    const settleT = now();
    await until(settle, 120);
    const settleSeconds = (now() - settleT) / 1000;

    const before = await counts();
    const cpu0 = await Promise.all(processes.map((p) => processCpu(p.pid)));
    const svc0 = await serviceCpuSeconds();
    const t0 = now();
    const after = await until(window, 300, before.finished);
    const cpu1 = await Promise.all(processes.map((p) => processCpu(p.pid)));
    const svc1 = await serviceCpuSeconds();
    const seconds = (now() - t0) / 1000;

    const tracks = after.finished - before.finished;
    const workerCpu = cpu1.reduce((a, c, i) => a + c - cpu0[i]!, 0);
    const serviceCpu = svc1.postgres - svc0.postgres + (svc1.redis - svc0.redis);
    rounds.push({
      processes: target,
      repeat: index >= steps.length,
      startSeconds: round(startSeconds, 2),
      settleSeconds: round(settleSeconds, 2),
      windowSeconds: round(seconds, 2),
      tracksFinished: tracks,
      tracksFailed: after.failed - before.failed,
      tracksPerSecond: round(tracks / seconds, 2),
      workerCpuCores: round(workerCpu / seconds, 2),
      postgresRedisCpuCores: round(serviceCpu / seconds, 2),
      cpuMsPerTrack: tracks > 0 ? round(((workerCpu + serviceCpu) * 1000) / tracks, 0) : 0,
      // A window that ran out of waiting work would understate the rate.
      backlogHeld: after.pending > 0,
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
      measure: `${r.processes} worker process${r.processes === 1 ? '' : 'es'}${r.repeat ? ' (again)' : ''}: tracks/s (× first step), CPU cores busy`,
      value: `${r.tracksPerSecond} (${r.speedup}×), ${round(r.workerCpuCores + r.postgresRedisCpuCores, 2)}`,
      target: '',
      met: r.backlogHeld ? null : false,
    })),
    notes: [
      `Steady state: per step, a window of at least ${window.seconds} s and ${window.tracks} tracks, after the step has settled (≥ ${settle.seconds} s and ${settle.tracks} tracks); backlog ≥ ${backlog} tracks; each process runs audio-tts ${CONCURRENCY.tts}, audio-mix ${CONCURRENCY.mix}, audio-batch ${CONCURRENCY.batch} at once; speech from the OpenAI fake (no delay, ~0.6 s of audio), real ffmpeg mixing (voice_only).`,
      `CPU cores busy = worker processes with their ffmpeg children, plus PostgreSQL and Redis, over the window; this machine has ${(await import('node:os')).availableParallelism()}.`,
    ],
    data: {
      steps,
      window,
      settle,
      backlog,
      concurrencyPerProcess: CONCURRENCY,
      rounds: scale,
      batchesCreated: batchCounter,
    },
  };
}
