import type { JobsOptions } from 'bullmq';
import { z } from 'zod';

// The queue catalog: every queue soundqueue uses, its payload schema and its default job
// options, in one place.
//
// WARNING: queue names are stored in Redis. Renaming one strands every job already queued
// under the old name; add a new queue and drain the old one instead.
export const QUEUE = {
  audioTts: 'audio-tts',
  audioMix: 'audio-mix',
  audioBatch: 'audio-batch',
  bookAnalyze: 'book-analyze',
  soundscape: 'soundscape',
  book: 'book',
  webhooks: 'webhooks',
  maintenance: 'maintenance',
} as const;

export type QueueName = (typeof QUEUE)[keyof typeof QUEUE];
export const queueNames = Object.values(QUEUE) as QueueName[];

export function isQueueName(value: string): value is QueueName {
  return (queueNames as string[]).includes(value);
}

const uuid = z.uuid();

/** Payloads are ids only: the rows hold the data, so a payload never goes stale. */
export const payloadSchemas = {
  // The run the job belongs to: a job of a run the batch has moved on from (a retry, the
  // reconciler) changes nothing (rollup/tracks.ts, ofRun). Optional: jobs queued before it was
  // added have none and are taken for the current run.
  'audio-tts': z.object({ batchId: uuid, trackId: uuid, run: z.number().int().positive().optional() }),
  'audio-mix': z.object({ batchId: uuid, trackId: uuid, run: z.number().int().positive().optional() }),
  'audio-batch': z.object({ batchId: uuid, run: z.number().int().positive() }),
  'book-analyze': z.object({ bookId: uuid, spreadIndex: z.number().int().nonnegative(), run: z.number().int().positive() }),
  soundscape: z.object({ bookId: uuid, soundscapeId: uuid, run: z.number().int().positive() }),
  book: z.object({
    bookId: uuid,
    run: z.number().int().positive(),
    // The step job pattern: where a resumed book job carries on.
    step: z.enum(['segment', 'finalize']).default('segment'),
  }),
  webhooks: z.object({ deliveryId: uuid }),
  maintenance: z.object({ task: z.enum(['reconcile', 'sweep-storage']) }),
} satisfies Record<QueueName, z.ZodType>;

export type Payload<Q extends QueueName> = z.infer<(typeof payloadSchemas)[Q]>;

/** Parses a payload read back from Redis (untyped JSON) against its queue's schema. */
export function parsePayload<Q extends QueueName>(queue: Q, data: unknown): Payload<Q> {
  return payloadSchemas[queue].parse(data) as Payload<Q>;
}

/** Attempts and first backoff delay, from config (JOB_ATTEMPTS, JOB_BACKOFF_MS). */
export interface JobTuning {
  attempts: number;
  backoffMs: number;
  webhookAttempts: number;
  webhookBackoffMs: number;
  /** Retention: finished jobs stay long enough for an operator to look at them in Bull
   * Board, bounded by age and count so Redis memory stays flat however many batches run. */
  removeOnComplete: { age: number; count: number };
  removeOnFail: { age: number; count: number };
}

export function tuningFrom(config: {
  JOB_ATTEMPTS: number;
  JOB_BACKOFF_MS: number;
  WEBHOOK_ATTEMPTS: number;
  WEBHOOK_BACKOFF_MS: number;
  JOB_KEEP_COMPLETED: number;
  JOB_KEEP_COMPLETED_SECONDS: number;
  JOB_KEEP_FAILED: number;
  JOB_KEEP_FAILED_SECONDS: number;
}): JobTuning {
  return {
    attempts: config.JOB_ATTEMPTS,
    backoffMs: config.JOB_BACKOFF_MS,
    webhookAttempts: config.WEBHOOK_ATTEMPTS,
    webhookBackoffMs: config.WEBHOOK_BACKOFF_MS,
    removeOnComplete: { age: config.JOB_KEEP_COMPLETED_SECONDS, count: config.JOB_KEEP_COMPLETED },
    removeOnFail: { age: config.JOB_KEEP_FAILED_SECONDS, count: config.JOB_KEEP_FAILED },
  };
}

/** How far below its doubling a webhook delivery's wait may fall, at random. */
const WEBHOOK_JITTER = 0.2;

/** Default job options of a queue: attempts, exponential backoff with jitter, retention. */
export function jobOptions(queue: QueueName, tuning: JobTuning): JobsOptions {
  const { removeOnComplete, removeOnFail } = tuning;
  if (queue === 'maintenance') {
    return { attempts: 1, removeOnComplete: { age: 3_600, count: 20 }, removeOnFail: { age: 86_400, count: 100 } };
  }
  if (queue === 'webhooks') {
    // Deliveries keep trying for a day: WEBHOOK_ATTEMPTS doublings of WEBHOOK_BACKOFF_MS.
    return {
      attempts: tuning.webhookAttempts,
      backoff: { type: 'exponential', delay: tuning.webhookBackoffMs, jitter: WEBHOOK_JITTER },
      removeOnComplete,
      removeOnFail,
    };
  }
  return {
    attempts: tuning.attempts,
    backoff: { type: 'exponential', delay: tuning.backoffMs, jitter: 0.5 },
    removeOnComplete,
    removeOnFail,
  };
}

/**
 * The job options of a delivery queued again after `attemptsMade` attempts (its row's count,
 * processors/webhook.ts), the last `idleMs` ago: the schedule goes on where it was rather than
 * starting over. Attempt n + 1 follows attempt n by WEBHOOK_BACKOFF_MS × 2^(n - 1), with jitter.
 * BullMQ doubles from the job's own attempts, so the job's backoff starts 2^attemptsMade times
 * higher, and its first attempt (attemptsMade + 1) waits what that attempt would have waited,
 * less the time already gone by since the last one.
 */
export function webhookJobOptions(tuning: JobTuning, attemptsMade: number, idleMs: number): JobsOptions {
  const options = jobOptions(QUEUE.webhooks, tuning);
  // None made: the first attempt is due at once. None left: the job sends nothing, it only
  // fails the delivery (processors/webhook.ts), so it has nothing to wait for.
  if (attemptsMade <= 0 || attemptsMade >= tuning.webhookAttempts) return options;
  const wait = tuning.webhookBackoffMs * 2 ** (attemptsMade - 1);
  // The same jitter as BullMQ's between attempts: deliveries queued again together (Redis
  // restarted empty) do not all go out at one moment.
  const jittered = Math.floor(wait * (1 - WEBHOOK_JITTER * Math.random()));
  return {
    ...options,
    // The attempts it has left: a job whose attempts the database refused to count fails for
    // good sooner, and the reconciler queues it again from the row's count, rather than its
    // backoff doubling on past the schedule's longest wait.
    attempts: tuning.webhookAttempts - attemptsMade,
    delay: Math.max(0, jittered - idleMs),
    backoff: { type: 'exponential', delay: tuning.webhookBackoffMs * 2 ** attemptsMade, jitter: WEBHOOK_JITTER },
  };
}

// Deterministic job ids, built here only. BullMQ ids may not contain ':'. The run number
// makes a retry's jobs new while a duplicate add within one run is a no-op.
export const jobId = {
  audioBatch: (batchId: string, run: number) => `batch.${batchId}.r${run}`,
  audioMix: (trackId: string, run: number) => `mix.${trackId}.r${run}`,
  audioTts: (trackId: string, run: number) => `tts.${trackId}.r${run}`,
  book: (bookId: string, run: number) => `book.${bookId}.r${run}`,
  bookAnalyze: (bookId: string, spreadIndex: number, run: number) => `analyze.${bookId}.${spreadIndex}.r${run}`,
  soundscape: (soundscapeId: string, run: number) => `soundscape.${soundscapeId}.r${run}`,
  webhook: (deliveryId: string) => `webhook.${deliveryId}`,
};
