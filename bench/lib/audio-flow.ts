import { randomUUID } from 'node:crypto';
import { FlowProducer, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { ApiContext } from '@soundqueue/api';
import { buildAudioBatchFlow } from '@soundqueue/shared/flows/audio-batch';
import { QUEUE, tuningFrom } from '@soundqueue/shared/queues';
import type { Config } from '@soundqueue/shared/config';
import { createBatch } from '../../apps/api/src/batches/batch-service';
import { deleteRedisPrefix, TEST_REDIS_URL } from '../../tests/helpers/services';
import { markUncounted, now, onCleanup, sleep } from './common';
import type { RawWrites } from './raw-writes';

// The audio batch flow two ways: the real one (batches created by the API's own service
// function, which writes the rows and enqueues buildAudioBatchFlow) and a raw BullMQ flow of
// the same shape and job options with processors that do nothing.

/** Tracks per batch: one vision of 14 sections in one variant. */
export const SECTIONS_PER_BATCH = 14;

export interface Concurrency {
  tts: number;
  mix: number;
  batch: number;
}

/** Batch sizes adding up to `tracks`, 14 at a time (the last one smaller). */
export function batchSizes(tracks: number, perBatch = SECTIONS_PER_BATCH): number[] {
  const sizes: number[] = [];
  for (let left = tracks; left > 0; left -= perBatch) sizes.push(Math.min(perBatch, left));
  return sizes;
}

/**
 * A batch request with `n` sections whose texts are unique to (tag, batch), so every track
 * needs its own voice rendition (no cache hits across batches or runs).
 */
export function batchBody(tag: string, batchIndex: number, n: number, variants: string[] = ['voice_only'], options: { shortText?: boolean } = {}) {
  return {
    visionId: `bench-${tag}-${batchIndex}`,
    voice: 'nova',
    variants,
    sections: Array.from({ length: n }, (_, i) => ({
      key: `s${i}`,
      title: `Section ${i}`,
      // Short texts are still unique. Numbers are padded so every text has the same length:
      // the OpenAI fake makes 1 s of audio per 15 characters, and a track's mixing cost
      // depends on its length (a 0.6 s track and a 0.8 s one differ by half in CPU).
      text: options.shortText
        ? `${tag} ${String(batchIndex).padStart(5, '0')}.${String(i).padStart(2, '0')}`
        : `Run ${tag}, batch ${String(batchIndex).padStart(5, '0')}, section ${String(i).padStart(2, '0')}: I wake up rested.`,
    })),
  };
}

export interface FlowRun {
  tracks: number;
  batches: number;
  seconds: number;
  tracksPerSecond: number;
  /** Seconds from the first create to the last batch enqueued. */
  enqueueSeconds: number;
  completedTracks: number;
  failedTracks: number;
}

/** A finished run's figures; `clock` holds now() readings at the start and after the last enqueue. */
function flowRun(tracks: number, batches: number, clock: { started: number; enqueued: number }, completedTracks: number, failedTracks: number): FlowRun {
  const seconds = (now() - clock.started) / 1000;
  return { tracks, batches, seconds, tracksPerSecond: tracks / seconds, enqueueSeconds: (clock.enqueued - clock.started) / 1000, completedTracks, failedTracks };
}

const TERMINAL = ['completed', 'partial_success', 'failed', 'cancelled'];

/**
 * Creates batches adding up to `tracks` through the API's createBatch (rows in one
 * transaction, then the real flow enqueued) and waits until every batch is terminal.
 * Workers must already be running against the same database and prefix.
 */
export async function runRealFlow(api: ApiContext, databaseUrl: string, options: { tracks: number; tag: string; userId?: string; timeoutMs: number }): Promise<FlowRun> {
  const sizes = batchSizes(options.tracks);
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 });
  markUncounted(pool);
  try {
    const ids: string[] = [];
    const started = now();
    for (const [i, n] of sizes.entries()) {
      const { batch } = await createBatch(api, options.userId ?? 'bench-user', batchBody(options.tag, i, n), undefined);
      ids.push(batch.id);
    }
    const enqueued = now();
    const deadline = Date.now() + options.timeoutMs;
    let row: { done: number; completed: number; failed: number } | undefined;
    for (;;) {
      const { rows } = await pool.query<{ done: number; completed: number; failed: number }>(
        `select count(*) filter (where status = any($2))::int as done,
                coalesce(sum(tracks_completed), 0)::int as completed,
                coalesce(sum(tracks_failed), 0)::int as failed
           from audio_generation_batches where id = any($1)`,
        [ids, TERMINAL],
      );
      row = rows[0]!;
      if (row.done === ids.length) break;
      if (Date.now() > deadline) {
        throw new Error(`real flow: only ${row.done} of ${ids.length} batches finished within ${options.timeoutMs} ms (${row.completed} tracks completed, ${row.failed} failed)`);
      }
      await sleep(25);
    }
    return flowRun(options.tracks, sizes.length, { started, enqueued }, row.completed, row.failed);
  } finally {
    await pool.end();
  }
}

/**
 * The raw BullMQ baseline: the same flows (buildAudioBatchFlow, so the same three levels,
 * job ids and options) under their own prefix, processed by workers whose processors return
 * at once, with the same per-queue concurrency, on the same Redis. With `writes`, the
 * processors make the design's durable writes for their track and nothing else (the second
 * baseline, `raw-writes.ts`), and the run checks they were all made.
 */
export async function runRawFlow(config: Config, options: { tracks: number; concurrency: Concurrency; timeoutMs: number; writes?: RawWrites }): Promise<FlowRun> {
  const prefix = `sqbench-raw-${randomUUID().slice(0, 8)}`;
  const tuning = tuningFrom(config);
  const connections: Redis[] = [];
  const connect = () => {
    const c = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
    connections.push(c);
    return c;
  };
  const workers: Worker[] = [];
  const release = onCleanup(`raw flow ${prefix}`, async () => {
    await Promise.all(workers.map((w) => w.close(true)));
    await flows.close();
    for (const c of connections) c.disconnect();
    await deleteRedisPrefix(TEST_REDIS_URL, prefix);
  });
  const flows = new FlowProducer({ connection: connect(), prefix });
  try {
    const sizes = batchSizes(options.tracks);
    const writes = options.writes;
    let roots = 0;
    let allDone!: () => void;
    let failed!: (error: Error) => void;
    const done = new Promise<void>((resolve, reject) => ((allDone = resolve), (failed = reject)));
    type Data = { batchId: string; trackId: string };
    const make = (queue: string, concurrency: number, processor: (job: Job<Data>) => Promise<unknown>) => {
      const w = new Worker<Data>(queue, processor, { connection: connect(), prefix, concurrency, autorun: false });
      // A failed job would be retried with backoff and leave the run waiting: stop at once.
      w.on('failed', (job, error) => failed(new Error(`raw flow: ${queue} job ${job?.id} failed: ${error.message}`)));
      workers.push(w);
      return w;
    };
    make(QUEUE.audioTts, options.concurrency.tts, async (job) => {
      await writes?.speak(job.data.trackId);
      return { ok: true };
    });
    make(QUEUE.audioMix, options.concurrency.mix, async (job) => {
      await writes?.mix(job.data.trackId);
      return { ok: true };
    });
    make(QUEUE.audioBatch, options.concurrency.batch, async (job) => {
      await writes?.finalise(job.data.batchId);
      roots += 1;
      if (roots === sizes.length) setImmediate(allDone);
      return { ok: true };
    });
    for (const w of workers) void w.run();
    await Promise.all(workers.map((w) => w.waitUntilReady()));
    const started = now();
    const batchIds: string[] = [];
    for (const n of sizes) {
      const batchId = randomUUID();
      const trackIds = Array.from({ length: n }, () => randomUUID());
      await writes?.createBatch(batchId, trackIds);
      await flows.add(buildAudioBatchFlow(batchId, 1, trackIds, tuning));
      batchIds.push(batchId);
    }
    const enqueued = now();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      done,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`raw flow: ${roots} of ${sizes.length} roots within ${options.timeoutMs} ms`)), options.timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    const run = flowRun(options.tracks, sizes.length, { started, enqueued }, options.tracks, 0);
    if (writes) {
      const outcome = await writes.outcome(batchIds);
      if (outcome.completedTracks !== options.tracks || outcome.finalisedBatches !== sizes.length) {
        throw new Error(`raw flow with writes: ${outcome.completedTracks} of ${options.tracks} tracks counted, ${outcome.finalisedBatches} of ${sizes.length} batches finalised`);
      }
    }
    return run;
  } finally {
    await release();
  }
}
