import { availableParallelism } from 'node:os';
import { Redis } from 'ioredis';
import { createApiContext } from '@soundqueue/api';
import { runFfprobe } from '../apps/worker/src/ffmpeg';
import { startTestWorker } from '../tests/helpers/app';
import { createTestEnv, TEST_REDIS_URL } from '../tests/helpers/services';
import { runRawFlow, runRealFlow, type Concurrency, type FlowRun } from './lib/audio-flow';
import {
  childCpuSeconds, clientCalls, countClientCalls, countSpawns, cpuMeter, onCleanup, round, selfCpuSeconds, spawnDelta, spawnSnapshot,
  type BenchOptions, type BenchResult,
} from './lib/common';
import { instantProviders } from './lib/instant-speech';

// Benchmark 1: orchestration overhead. N tracks through the real audio flow (rows written by
// the API's own createBatch, the real three-level flow, the real processors, rollups and
// progress events) with an instant speech provider, against raw BullMQ flows of the same
// shape (buildAudioBatchFlow itself) with no-op processors, same concurrency, same Redis, in
// the same run.
//
// No pass-through mixer is possible without changing application code: processAudioMix
// imports mixTrack directly, and the rendition path (obtainRendition) probes and measures
// every new voice with ffmpeg, with no seam to skip either. So the real flow does the cheapest
// real work there is (a 0.7 s voice, the voice_only variant, no bed) plus the ffmpeg and
// ffprobe runs that come with it, and the benchmark measures where the CPU goes (ffmpeg
// children, this Node process, PostgreSQL, Redis) so the orchestration's own cost is visible.

export const CONCURRENCY: Concurrency = { tts: 8, mix: 4, batch: 4 };

export function concurrencyEnv(c: Concurrency): Record<string, string> {
  return {
    WORKER_CONCURRENCY_AUDIO_TTS: String(c.tts),
    WORKER_CONCURRENCY_AUDIO_MIX: String(c.mix),
    WORKER_CONCURRENCY_AUDIO_BATCH: String(c.batch),
  };
}

async function redisCommands(): Promise<number> {
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    return Number(/total_commands_processed:(\d+)/.exec(await redis.info('stats'))?.[1] ?? 0);
  } finally {
    redis.disconnect();
  }
}

/** Measures a run: wall figures from the run, CPU by process kind, Redis commands. */
async function metered(runIt: () => Promise<FlowRun>) {
  const commands0 = await redisCommands();
  const spawns0 = spawnSnapshot();
  const calls0 = clientCalls();
  const meter = await cpuMeter();
  const result = await runIt();
  const cpu = await meter();
  const calls1 = clientCalls();
  const commands = (await redisCommands()) - commands0;
  const perTrack = (v: number) => round((v * 1000) / result.tracks, 3);
  return {
    ...result,
    seconds: round(result.seconds, 2),
    enqueueSeconds: round(result.enqueueSeconds, 2),
    tracksPerSecond: round(result.tracksPerSecond, 2),
    cpuSeconds: { node: round(cpu.node, 2), ffmpegChildren: round(cpu.children, 2), postgres: round(cpu.postgres, 2), redis: round(cpu.redis, 2) },
    cpuMsPerTrack: { node: perTrack(cpu.node), ffmpegChildren: perTrack(cpu.children), postgres: perTrack(cpu.postgres), redis: perTrack(cpu.redis) },
    // Counted in this process (client side), so other clients of the shared servers do not mix in.
    postgresQueriesPerTrack: round((calls1.postgres - calls0.postgres) / result.tracks, 1),
    redisCommandsPerTrack: round((calls1.redis - calls0.redis) / result.tracks, 1),
    // Server-wide, for comparison: includes any other client of this Redis.
    redisServerCommandsPerTrack: round(commands / result.tracks, 1),
    childProcesses: spawnDelta(spawns0),
  };
}

/** What starting one ffmpeg-family process costs, in this process and in the child, doing nothing. */
async function spawnCost(times: number) {
  const self0 = selfCpuSeconds();
  const child0 = await childCpuSeconds();
  for (let i = 0; i < times; i += 1) await runFfprobe(['-version']);
  return {
    nodeMsPerSpawn: round(((selfCpuSeconds() - self0) * 1000) / times, 2),
    childMsPerSpawn: round((((await childCpuSeconds()) - child0) * 1000) / times, 1),
    rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
  };
}

export async function orchestration(options: BenchOptions): Promise<BenchResult> {
  // Each real track costs most of a CPU second of ffmpeg start-ups (see the notes), so the
  // quick run sends 14 real tracks (one batch), not 200, to stay inside its minute.
  const tracks = options.quick ? 14 : 2_000;
  const rawTracks = options.quick ? 200 : 2_000;
  const timeoutMs = options.quick ? 60_000 : 3_600_000;
  countSpawns();
  await countClientCalls();

  const env = await createTestEnv({
    LOG_LEVEL: 'error',
    DATABASE_POOL_SIZE: '10',
    WORKER_QUEUES: 'audio-tts,audio-mix,audio-batch',
    ...concurrencyEnv(CONCURRENCY),
  });
  onCleanup(`orchestration env ${env.prefix}`, () => env.cleanup());
  const api = await createApiContext(env.config);
  onCleanup('orchestration api context', () => api.close());
  const worker = await startTestWorker(env.config, await instantProviders());
  const closeWorker = onCleanup('orchestration workers', () => worker.close());

  // Warm-up, not measured: connections, JIT, the first ffmpeg runs, on both sides.
  await runRealFlow(api, env.databaseUrl, { tracks: options.quick ? 2 : 14, tag: 'warm', timeoutMs: 60_000 });
  await runRawFlow(env.config, { tracks: 140, concurrency: CONCURRENCY, timeoutMs: 60_000 });

  // Raw before and after the real run: the baseline is their mean, so a change in the
  // machine's load during the run affects both sides alike.
  const rawBefore = await metered(() => runRawFlow(env.config, { tracks: rawTracks, concurrency: CONCURRENCY, timeoutMs }));
  const real = await metered(() => runRealFlow(api, env.databaseUrl, { tracks, tag: 'run', timeoutMs }));
  const spawnFloor = await spawnCost(options.quick ? 5 : 30);
  await closeWorker();
  const rawAfter = await metered(() => runRawFlow(env.config, { tracks: rawTracks, concurrency: CONCURRENCY, timeoutMs }));

  const rawTps = (rawBefore.tracksPerSecond + rawAfter.tracksPerSecond) / 2;
  const ratio = real.tracksPerSecond / rawTps;
  const spawnsPerTrack = Object.values(real.childProcesses).reduce((a, b) => a + b, 0) / tracks;
  const cores = availableParallelism();

  // CPU per track, and what the flow would do with ffmpeg free (a mixer seam): all cores
  // on the orchestration's own CPU (Node minus the cost of starting children, PostgreSQL,
  // Redis). An estimate from measured costs, not a measurement.
  const cpu = real.cpuMsPerTrack;
  const nodeWithoutSpawns = Math.max(0, cpu.node - spawnsPerTrack * spawnFloor.nodeMsPerSpawn);
  const orchestrationMs = nodeWithoutSpawns + cpu.postgres + cpu.redis;
  const rawCpu = (rawBefore.cpuMsPerTrack.node + rawAfter.cpuMsPerTrack.node + rawBefore.cpuMsPerTrack.redis + rawAfter.cpuMsPerTrack.redis) / 2;
  const estimateTps = (cores * 1000) / orchestrationMs;
  const ffmpegStartupShare = (spawnsPerTrack * spawnFloor.childMsPerSpawn) / cpu.ffmpegChildren;

  return {
    name: 'orchestration',
    headlines: [
      { benchmark: '1 orchestration', measure: 'real flow (cheapest real mix), tracks/s', value: String(round(real.tracksPerSecond, 2)), target: '', met: null },
      { benchmark: '1 orchestration', measure: 'raw BullMQ flow, no-op, tracks/s', value: String(round(rawTps, 0)), target: '', met: null },
      { benchmark: '1 orchestration', measure: 'ratio real / raw', value: String(round(ratio, 4)), target: '>= 0.5 (goal 0.8)', met: ratio >= 0.5 },
      { benchmark: '1 orchestration', measure: 'CPU ms/track: ffmpeg | node | pg | redis', value: `${round(cpu.ffmpegChildren, 0)} | ${round(cpu.node, 0)} | ${round(cpu.postgres, 1)} | ${round(cpu.redis, 1)}`, target: '', met: null },
      {
        benchmark: '1 orchestration',
        measure: 'per track: PostgreSQL queries | Redis commands (raw)',
        value: `${real.postgresQueriesPerTrack} | ${real.redisCommandsPerTrack} (${round((rawBefore.redisCommandsPerTrack + rawAfter.redisCommandsPerTrack) / 2, 1)})`,
        target: '',
        met: null,
      },
      { benchmark: '1 orchestration', measure: 'est. ratio with a pass-through mixer', value: String(round(estimateTps / rawTps, 3)), target: '(estimate)', met: null },
    ],
    notes: [
      `real: ${tracks} tracks in ${real.batches} batches of up to 14 (voice_only, 0.7 s voice, each track its own rendition), ${real.seconds} s, ${real.completedTracks} completed, ${real.failedTracks} failed; raw: ${rawTracks} tracks, ${rawBefore.seconds} s before and ${rawAfter.seconds} s after; concurrency tts ${CONCURRENCY.tts}, mix ${CONCURRENCY.mix}, batch ${CONCURRENCY.batch}.`,
      `No mixer seam: each real track started ${round(spawnsPerTrack, 1)} ffmpeg/ffprobe processes (${JSON.stringify(real.childProcesses)}); one start of ffprobe doing nothing costs ${spawnFloor.childMsPerSpawn} ms CPU in the child and ${spawnFloor.nodeMsPerSpawn} ms in this ${spawnFloor.rssMiB} MiB Node process, so process start-up is ~${round(ffmpegStartupShare * 100, 0)} % of the ffmpeg CPU.`,
      `Orchestration's own CPU per track (Node minus spawning, PostgreSQL, Redis): ${round(orchestrationMs, 1)} ms vs ${round(rawCpu, 2)} ms for raw BullMQ; with a free mixer and all ${cores} cores on it, ~${round(estimateTps, 0)} tracks/s (an estimate).`,
    ],
    data: {
      tracks,
      rawTracks,
      concurrency: CONCURRENCY,
      real,
      rawBefore,
      rawAfter,
      rawTracksPerSecond: round(rawTps, 1),
      ratio: round(ratio, 5),
      target: { min: 0.5, goal: 0.8 },
      spawnsPerTrack: round(spawnsPerTrack, 2),
      spawnFloor,
      cores,
      estimateWithoutFfmpeg: {
        orchestrationCpuMsPerTrack: round(orchestrationMs, 2),
        rawCpuMsPerTrack: round(rawCpu, 3),
        tracksPerSecond: round(estimateTps, 1),
        ratio: round(estimateTps / rawTps, 4),
        method: 'cores / (node CPU per track - spawns per track x node CPU per spawn + PostgreSQL CPU + Redis CPU per track); CPU-bound assumption',
      },
    },
  };
}
