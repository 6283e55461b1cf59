import { writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { createApiContext } from '@soundqueue/api';
import { ffmpegMixer } from '@soundqueue/worker';
import { startTestWorker } from '../tests/helpers/app';
import { createTestEnv, TEST_REDIS_URL } from '../tests/helpers/services';
import { runRawFlow, runRealFlow, type Concurrency, type FlowRun } from './lib/audio-flow';
import {
  clientCalls, countClientCalls, countSpawns, cpuMeter, onCleanup, round, spawnDelta, spawnSnapshot,
  type BenchOptions, type BenchResult,
} from './lib/common';
import { instantClip, instantProviders } from './lib/instant-speech';
import { createPassThroughMixer } from './lib/pass-through-mixer';
import { createRawWrites } from './lib/raw-writes';
import { roundTripCosts } from './lib/round-trips';

// Benchmark 1: orchestration overhead. N tracks through the real audio flow (rows written by
// the API's own createBatch, the real three-level flow, the real processors with their
// rendition claim and cache, storage, rollups and progress events) with an instant speech
// provider and a pass-through mixer, against raw BullMQ flows of the same shape
// (buildAudioBatchFlow itself) with no-op processors, same concurrency, same Redis, in the
// same run. The mixer is the worker context's seam (apps/worker/src/audio/mixer.ts): the
// pass-through one copies the voice as the track and reports a fixed measurement, so no
// ffmpeg runs and what is left is the orchestration's own cost.

export const CONCURRENCY: Concurrency = { tts: 8, mix: 4, batch: 4 };
/**
 * For the third reference: enough jobs at once that group commit gathers several rows per
 * statement (at CONCURRENCY it gathers one or two, and is slower than single-row statements).
 */
export const HIGH_CONCURRENCY: Concurrency = { tts: 128, mix: 128, batch: 16 };

export function concurrencyConfig(c: Concurrency) {
  return { WORKER_CONCURRENCY_AUDIO_TTS: c.tts, WORKER_CONCURRENCY_AUDIO_MIX: c.mix, WORKER_CONCURRENCY_AUDIO_BATCH: c.batch };
}

export function concurrencyEnv(c: Concurrency): Record<string, string> {
  return Object.fromEntries(Object.entries(concurrencyConfig(c)).map(([name, value]) => [name, String(value)]));
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

/** The instant clip's real measurement, once, so the pass-through mixer reports true figures. */
async function measuredClip(): Promise<{ durationMs: number; loudnessLufs: number }> {
  const path = join(tmpdir(), `sq-bench-clip-measure-${process.pid}.wav`);
  try {
    await writeFile(path, await instantClip());
    return await ffmpegMixer.measureVoice(path);
  } finally {
    await rm(path, { force: true });
  }
}

export async function orchestration(options: BenchOptions): Promise<BenchResult> {
  const tracks = options.quick ? 280 : 2_000;
  const timeoutMs = options.quick ? 60_000 : 1_800_000;
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
  const mixer = createPassThroughMixer(await measuredClip());
  const providers = await instantProviders();
  let worker = await startTestWorker(env.config, { providers, mixer });
  onCleanup('orchestration workers', () => worker.close());

  // The second baseline's writes go to the benchmark's database through a pool the size of
  // the service's.
  const writes = await createRawWrites(env.databaseUrl, env.config.DATABASE_POOL_SIZE);
  onCleanup('orchestration raw writes pool', () => writes.close());
  const grouped = await createRawWrites(env.databaseUrl, env.config.DATABASE_POOL_SIZE, { grouped: true });
  onCleanup('orchestration grouped writes pool', () => grouped.close());

  // Warm-up, not measured: connections, JIT, prepared plans, on every side (the quick run's
  // smaller one leaves the minute for the measured runs).
  const warm = options.quick ? 70 : 140;
  await runRealFlow(api, env.databaseUrl, { tracks: warm, tag: 'warm', timeoutMs: 60_000 });
  await runRawFlow(env.config, { tracks: warm, concurrency: CONCURRENCY, timeoutMs: 60_000 });
  await runRawFlow(env.config, { tracks: warm, concurrency: CONCURRENCY, timeoutMs: 60_000, writes });
  await runRawFlow(env.config, { tracks: warm, concurrency: HIGH_CONCURRENCY, timeoutMs: 60_000, writes: grouped });

  // Each baseline before and after the real run: a baseline is the mean of its two, so a
  // change in the machine's load during the run affects every side alike.
  const rawBefore = await metered(() => runRawFlow(env.config, { tracks, concurrency: CONCURRENCY, timeoutMs }));
  const writesBefore = await metered(() => runRawFlow(env.config, { tracks, concurrency: CONCURRENCY, timeoutMs, writes }));
  const real = await metered(() => runRealFlow(api, env.databaseUrl, { tracks, tag: 'run', timeoutMs }));
  const writesAfter = await metered(() => runRawFlow(env.config, { tracks, concurrency: CONCURRENCY, timeoutMs, writes }));
  const rawAfter = await metered(() => runRawFlow(env.config, { tracks, concurrency: CONCURRENCY, timeoutMs }));

  // The third reference, at HIGH_CONCURRENCY: the design's writes group-committed, between
  // two raw runs at that concurrency, and the real flow with workers at that concurrency.
  const rawHighBefore = await metered(() => runRawFlow(env.config, { tracks, concurrency: HIGH_CONCURRENCY, timeoutMs }));
  const sent0 = grouped.sent();
  const groupedHigh = await metered(() => runRawFlow(env.config, { tracks, concurrency: HIGH_CONCURRENCY, timeoutMs, writes: grouped }));
  const sent1 = grouped.sent();
  const rawHighAfter = await metered(() => runRawFlow(env.config, { tracks, concurrency: HIGH_CONCURRENCY, timeoutMs }));
  await worker.close();
  worker = await startTestWorker({ ...env.config, ...concurrencyConfig(HIGH_CONCURRENCY) }, { providers, mixer });
  await runRealFlow(api, env.databaseUrl, { tracks: warm, tag: 'warm-high', timeoutMs: 60_000 });
  const realHigh = await metered(() => runRealFlow(api, env.databaseUrl, { tracks, tag: 'run-high', timeoutMs }));

  // After the measured runs, so its own calls fall outside them.
  const trips = await roundTripCosts(TEST_REDIS_URL, env.databaseUrl, options.quick ? 1_000 : 4_000);
  // The real flow's round trips priced at those costs: the least and the most of its Node CPU
  // per track that talking to the servers at all accounts for.
  const tripsMs = (key: 'oneAtATimeUs' | 'tenAtOnceUs') =>
    (real.postgresQueriesPerTrack * trips.postgres[key] + real.redisCommandsPerTrack * trips.redis[key]) / 1000;

  const rawTps = (rawBefore.tracksPerSecond + rawAfter.tracksPerSecond) / 2;
  const ratio = real.tracksPerSecond / rawTps;
  const mean = (f: (r: typeof rawBefore) => number) => (f(rawBefore) + f(rawAfter)) / 2;
  const cpu = real.cpuMsPerTrack;
  const rawCpu = { node: mean((r) => r.cpuMsPerTrack.node), redis: mean((r) => r.cpuMsPerTrack.redis) };
  const writesMean = (f: (r: typeof writesBefore) => number) => (f(writesBefore) + f(writesAfter)) / 2;
  const writesTps = writesMean((r) => r.tracksPerSecond);
  const writesCpu = { node: writesMean((r) => r.cpuMsPerTrack.node), postgres: writesMean((r) => r.cpuMsPerTrack.postgres), redis: writesMean((r) => r.cpuMsPerTrack.redis) };
  const rawHighTps = (rawHighBefore.tracksPerSecond + rawHighAfter.tracksPerSecond) / 2;
  const high = `${HIGH_CONCURRENCY.tts}/${HIGH_CONCURRENCY.mix}/${HIGH_CONCURRENCY.batch}`;
  const rowsPerStatement = (sent1.rows - sent0.rows) / Math.max(1, sent1.statements - sent0.statements);
  const coresBusy = (r: typeof real) => (r.cpuSeconds.node + r.cpuSeconds.postgres + r.cpuSeconds.redis) / r.seconds;
  const fmtCpu = (c: { node: number; postgres?: number; redis: number }) =>
    `${round(c.node, 2)} | ${c.postgres === undefined ? '-' : round(c.postgres, 2)} | ${round(c.redis, 2)}`;

  return {
    name: 'orchestration',
    headlines: [
      { benchmark: '1 orchestration', measure: 'real flow (instant speech, pass-through mixer), tracks/s', value: String(round(real.tracksPerSecond, 1)), target: '', met: null },
      { benchmark: '1 orchestration', measure: 'raw BullMQ flow, no-op processors, tracks/s', value: String(round(rawTps, 1)), target: '', met: null },
      { benchmark: '1 orchestration', measure: 'ratio real / raw', value: String(round(ratio, 3)), target: '>= 0.5 (goal 0.8)', met: ratio >= 0.5 },
      { benchmark: '1 orchestration', measure: 'CPU ms/track real: node | pg | redis', value: fmtCpu(cpu), target: '', met: null },
      { benchmark: '1 orchestration', measure: 'CPU ms/track raw: node | pg | redis', value: fmtCpu(rawCpu), target: '', met: null },
      {
        benchmark: '1 orchestration',
        measure: 'for reference: raw flow + the design\'s durable writes, tracks/s (real / it)',
        value: `${round(writesTps, 1)} (${round(real.tracksPerSecond / writesTps, 3)})`,
        target: '',
        met: null,
      },
      {
        benchmark: '1 orchestration',
        measure: 'CPU ms/track raw + writes: node | pg | redis; statements/track',
        value: `${fmtCpu(writesCpu)}; ${round(writesMean((r) => r.postgresQueriesPerTrack), 1)}`,
        target: '',
        met: null,
      },
      {
        benchmark: '1 orchestration',
        measure: `for reference, all at concurrency ${high}: raw + the design's writes group-committed, tracks/s (to raw there; rows per statement)`,
        value: `${round(groupedHigh.tracksPerSecond, 1)} (${round(groupedHigh.tracksPerSecond / rawHighTps, 3)}; ${round(rowsPerStatement, 1)})`,
        target: '',
        met: null,
      },
      {
        benchmark: '1 orchestration',
        measure: `at concurrency ${high}: real flow | raw flow, tracks/s (ratio)`,
        value: `${round(realHigh.tracksPerSecond, 1)} | ${round(rawHighTps, 1)} (${round(realHigh.tracksPerSecond / rawHighTps, 3)})`,
        target: '',
        met: null,
      },
      {
        benchmark: '1 orchestration',
        measure: `CPU ms/track at concurrency ${high}, node | pg | redis: real; raw + grouped writes; raw`,
        value: `${fmtCpu(realHigh.cpuMsPerTrack)}; ${fmtCpu(groupedHigh.cpuMsPerTrack)}; ${fmtCpu({ node: (rawHighBefore.cpuMsPerTrack.node + rawHighAfter.cpuMsPerTrack.node) / 2, redis: (rawHighBefore.cpuMsPerTrack.redis + rawHighAfter.cpuMsPerTrack.redis) / 2 })}`,
        target: '',
        met: null,
      },
      {
        // On 2 cores neither flow waits on anything: both keep the machine about as busy, so
        // the ratio is the raw flow's CPU per track over the real flow's (BENCHMARKS.md, 1).
        benchmark: '1 orchestration',
        measure: 'cores busy (Node + PostgreSQL + Redis): real | raw | raw + writes',
        value: `${round(coresBusy(real), 2)} | ${round(mean(coresBusy), 2)} | ${round(writesMean(coresBusy), 2)}`,
        target: '',
        met: null,
      },
      {
        benchmark: '1 orchestration',
        // For 0.5 the service may add at most the raw flow's own CPU per track.
        measure: "CPU ms/track added by the design's writes alone (raw + writes − raw) vs the raw flow's whole",
        value: `${round(writesCpu.node + writesCpu.postgres + writesCpu.redis - rawCpu.node - rawCpu.redis, 2)} vs ${round(rawCpu.node + rawCpu.redis, 2)}`,
        target: '',
        met: null,
      },
      {
        benchmark: '1 orchestration',
        measure: 'per track: PostgreSQL queries | Redis commands (raw)',
        value: `${real.postgresQueriesPerTrack} | ${real.redisCommandsPerTrack} (${round(mean((r) => r.redisCommandsPerTrack), 1)})`,
        target: '',
        met: null,
      },
      {
        benchmark: '1 orchestration',
        measure: 'Node CPU per round trip, one at a time / ten at once: Redis | PostgreSQL',
        value: `${Math.round(trips.redis.oneAtATimeUs)} / ${Math.round(trips.redis.tenAtOnceUs)} µs | ${Math.round(trips.postgres.oneAtATimeUs)} / ${Math.round(trips.postgres.tenAtOnceUs)} µs`,
        target: '',
        met: null,
      },
      {
        benchmark: '1 orchestration',
        measure: "real flow's round trips at those costs, Node CPU ms/track",
        value: `${round(tripsMs('tenAtOnceUs'), 2)}–${round(tripsMs('oneAtATimeUs'), 2)} of ${round(cpu.node, 2)}`,
        target: '',
        met: null,
      },
    ],
    notes: [
      `${tracks} tracks each side, in batches of up to 14 (voice_only, each track its own voice rendition); real ${real.seconds} s (${real.completedTracks} completed, ${real.failedTracks} failed, ${Object.keys(real.childProcesses).length === 0 ? 'no child processes' : `child processes ${JSON.stringify(real.childProcesses)}`}); raw ${rawBefore.seconds} s before and ${rawAfter.seconds} s after; raw + writes ${writesBefore.seconds} s before and ${writesAfter.seconds} s after; concurrency tts ${CONCURRENCY.tts}, mix ${CONCURRENCY.mix}, batch ${CONCURRENCY.batch}; all in this one Node process. Then, at concurrency ${high}: raw ${rawHighBefore.seconds} s, raw + grouped writes ${groupedHigh.seconds} s, raw ${rawHighAfter.seconds} s, and the real flow (workers restarted at that concurrency) ${realHigh.seconds} s (${realHigh.completedTracks} completed, ${realHigh.failedTracks} failed).`,
      `The raw + writes baseline (bench/lib/raw-writes.ts) is the raw flow whose processors also make, as prepared single-row statements, the writes DESIGN.md asks of every track (four conditional transitions, the rendition claim and ready, the provider call, the terminal update with the batch counters, the batch's rows and final status); the issue's ratio is against the raw flow alone. With \`grouped\` (the same file) it makes the same writes with group commit: each per-track statement carries the rows of every job waiting to make it, sent as soon as the previous one of its kind returned.`,
      `CPU per track is this process (API service + workers + the benchmark's polling), and the PostgreSQL and Redis servers (any client of theirs, so other load on the machine shows there too).`,
    ],
    data: {
      tracks,
      concurrency: CONCURRENCY,
      real,
      rawBefore,
      rawAfter,
      rawTracksPerSecond: round(rawTps, 1),
      ratio: round(ratio, 4),
      rawWithWrites: { before: writesBefore, after: writesAfter, tracksPerSecond: round(writesTps, 1), realRatio: round(real.tracksPerSecond / writesTps, 4) },
      highConcurrency: {
        concurrency: HIGH_CONCURRENCY,
        rawBefore: rawHighBefore,
        rawAfter: rawHighAfter,
        rawTracksPerSecond: round(rawHighTps, 1),
        groupedWrites: groupedHigh,
        groupedRatio: round(groupedHigh.tracksPerSecond / rawHighTps, 4),
        rowsPerGroupedStatement: round(rowsPerStatement, 2),
        real: realHigh,
        realRatio: round(realHigh.tracksPerSecond / rawHighTps, 4),
      },
      roundTripCpuUs: trips,
      roundTripsNodeCpuMsPerTrack: { tenAtOnce: round(tripsMs('tenAtOnceUs'), 3), oneAtATime: round(tripsMs('oneAtATimeUs'), 3) },
      target: { min: 0.5, goal: 0.8 },
    },
  };
}
