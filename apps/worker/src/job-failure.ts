import { type Job, UnrecoverableError, Worker } from 'bullmq';
import { SoundqueueError } from '@soundqueue/shared/errors';

export interface JobRun {
  job: Job;
  token: string | undefined;
  worker: Worker;
  maxRateLimitRestarts: number;
}

/** Whether this attempt is the job's last: no retry will follow a failure now. */
export function isLastAttempt(job: Job, error: unknown): boolean {
  if (error instanceof UnrecoverableError) return true;
  if (error instanceof SoundqueueError && !error.retryable) return true;
  return job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
}

/**
 * Turns a processor's failure into what BullMQ should do with it:
 * - a provider's 429 with Retry-After pauses the whole queue for that long (global across
 *   replicas) and puts the job back without using an attempt, up to a cap of restarts;
 * - on the last attempt, `onFinal` records the failure in the database first, so the row
 *   says why before the job is marked failed.
 * The error is rethrown as it is: the worker (workers.ts) turns every processor's failure into
 * the job's error in one place (toJobError: UnrecoverableError when retrying cannot help).
 */
export async function handleJobFailure(run: JobRun, error: unknown, onFinal: (error: unknown) => Promise<void>): Promise<never> {
  const { job, worker } = run;
  if (error instanceof SoundqueueError && error.retryable && error.retryAfterSeconds !== undefined) {
    const restarts = Number((job.data as { rateLimitRestarts?: number }).rateLimitRestarts ?? 0);
    if (restarts < run.maxRateLimitRestarts) {
      await job.updateData({ ...job.data, rateLimitRestarts: restarts + 1 });
      await worker.rateLimit(Math.max(1, Math.ceil(error.retryAfterSeconds * 1000)));
      throw Worker.RateLimitError();
    }
  }
  if (isLastAttempt(job, error)) await onFinal(error);
  throw error;
}
