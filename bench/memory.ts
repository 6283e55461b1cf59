import { randomUUID } from 'node:crypto';
import { FlowProducer, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { loadConfig } from '@soundqueue/shared/config';
import { buildAudioBatchFlow } from '@soundqueue/shared/flows/audio-batch';
import { QUEUE, tuningFrom } from '@soundqueue/shared/queues';
import { startOwnRedis } from '../tests/helpers/redis-server';
import { codeVersion, describeMachine, onCleanup, round, runCleanups, writeResult, type BenchOptions, type BenchResult, type Headline } from './lib/common';

// Redis memory across many batches: 10,000 one-track batches (quick: 2,000) through the
// production flow builder with the production job options (retention by age and count on
// every node), with processors that do nothing, on a private redis-server so used_memory is
// ours alone. Event logs are not part of this: they expire 5 minutes after their batch ends
// (EVENT_LOG_FINISHED_TTL_SECONDS), which tests/ops/retention.test.ts checks.
//
// Run alone: npx tsx bench/memory.ts [--quick]

export async function benchMemory(options: BenchOptions): Promise<BenchResult> {
  const batches = options.quick ? 2_000 : 10_000;
  const redis = await startOwnRedis();
  onCleanup('private redis', () => redis.stop());
  const config = loadConfig({ REDIS_URL: redis.url, QUEUE_PREFIX: 'membench' });
  const tuning = tuningFrom(config);
  const client = new Redis(redis.url);
  onCleanup('redis client', () => client.disconnect());
  const connection = { host: '127.0.0.1', port: redis.port };
  const workers = [QUEUE.audioTts, QUEUE.audioMix, QUEUE.audioBatch].map(
    (name) => new Worker(name, async () => 'ok', { connection, prefix: config.QUEUE_PREFIX, concurrency: 50 }),
  );
  onCleanup('workers', async () => {
    await Promise.all(workers.map((w) => w.close()));
  });
  const flows = new FlowProducer({ connection, prefix: config.QUEUE_PREFIX });
  onCleanup('flow producer', () => flows.close());

  const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
  const completedRoots = () => client.zcard(`${config.QUEUE_PREFIX}:${QUEUE.audioBatch}:completed`);
  const samples: { batches: number; usedMemoryBytes: number; keys: number }[] = [];
  const baseline = await usedMemory();
  let done = 0;
  const started = performance.now();
  const sampleEvery = batches / 10;
  let finished = 0;
  workers[2]!.on('completed', () => finished++);
  while (done < batches) {
    const chunk = Math.min(200, batches - done);
    await Promise.all(Array.from({ length: chunk }, () => flows.add(buildAudioBatchFlow(randomUUID(), 1, [randomUUID()], tuning))));
    done += chunk;
    // Keep the backlog small: wait for this chunk's roots to finish.
    while (finished < done) await new Promise((resolve) => setTimeout(resolve, 20));
    if (done % sampleEvery === 0) {
      samples.push({ batches: done, usedMemoryBytes: (await usedMemory()) - baseline, keys: await client.dbsize() });
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const retained = await completedRoots();
  const atTenth = samples[0]!;
  const atEnd = samples.at(-1)!;
  const half = samples[Math.floor(samples.length / 2) - 1]!;
  const growthSecondHalf = (atEnd.usedMemoryBytes - half.usedMemoryBytes) / Math.max(1, half.usedMemoryBytes);
  const headlines: Headline[] = [
    { benchmark: '6 memory', measure: `Redis memory after ${batches.toLocaleString('en')} batches (MiB above empty)`, value: String(round(atEnd.usedMemoryBytes / 1048576, 1)), target: 'bounded', met: null },
    // Judged on the full run only: each queue's BullMQ event stream (capped at 10,000 entries,
    // a few per job) is still filling at 2,000 batches, so the quick run's second half grows.
    {
      benchmark: '6 memory',
      measure: 'growth over the second half of the run',
      value: `${round(growthSecondHalf * 100, 1)} %`,
      target: options.quick ? '(judged on the full run)' : '≈ 0 once retention is reached',
      met: options.quick ? null : Math.abs(growthSecondHalf) < 0.1,
    },
    { benchmark: '6 memory', measure: `keys at ${atTenth.batches} vs ${atEnd.batches} batches`, value: `${atTenth.keys} vs ${atEnd.keys}`, target: '', met: null },
    { benchmark: '6 memory', measure: 'completed batch roots kept (JOB_KEEP_COMPLETED)', value: String(retained), target: `≤ ${tuning.removeOnComplete.count}`, met: retained <= tuning.removeOnComplete.count },
  ];
  return {
    name: 'memory',
    headlines,
    notes: ['6: production flow builder and job options, no-op processors, a private redis-server; used_memory sampled every tenth of the run. Event logs are not included (they expire after their batch ends).'],
    data: { batches, seconds: round(seconds, 1), samples },
  };
}


if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    const options = { quick: process.argv.includes('--quick') };
    const started = performance.now();
    const result = await benchMemory(options);
    await writeResult(result, options, await describeMachine(), codeVersion(), (performance.now() - started) / 1000, { before: [], after: [] });
    for (const row of result.headlines) console.log(`${row.measure}: ${row.value} ${row.target ? `(target ${row.target})` : ''}`);
  } finally {
    await runCleanups();
  }
  process.exit(0);
}
