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
  maintenance: z.object({ task: z.enum(['reconcile']) }),
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
      backoff: { type: 'exponential', delay: tuning.webhookBackoffMs, jitter: 0.2 },
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
