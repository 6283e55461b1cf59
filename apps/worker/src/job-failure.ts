import { DelayedError, type Job, type Queue, UnrecoverableError, Worker } from 'bullmq';
import { SoundqueueError } from '@soundqueue/shared/errors';

export interface JobRun {
  job: Job;
  token: string | undefined;
  worker: Worker;
  maxRateLimitRestarts: number;
  /**
   * The queue a provider's 429 pauses when it is not the job's own: a mix job that voices a
   * lost speech job pauses speech, where the provider is called, and not mixing.
   */
  pausesOn429?: Queue;
}

/**
 * The longest a provider's Retry-After pauses its queue. A longer one (a daily quota, or a
 * broken header such as `Retry-After: 99999999999999999`) pauses this long and the job asks again, at the
 * cost of one of its RATE_LIMIT_MAX_RESTARTS; a 429 costs nothing. Uncapped, the pause froze
 * the queue for every user for as long as the header said (years), and past about 9.2e15 s
 * Redis refused the PX value: the job failed with Redis's error, and on its last attempt
 * before its track or spread was marked failed.
 */
export const MAX_RATE_LIMIT_PAUSE_MS = 60 * 60_000;

/** Whether this attempt is the job's last: no retry will follow a failure now. */
export function isLastAttempt(job: Job, error: unknown): boolean {
  if (error instanceof UnrecoverableError) return true;
  if (error instanceof SoundqueueError && !error.retryable) return true;
  return job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
}

/**
 * Turns a processor's failure into what BullMQ should do with it:
 * - a provider's 429 with Retry-After pauses the provider's queue for that long (global across
 *   replicas: every provider queue's workers have a limiter, see workers.ts) and puts the job
 *   back without using an attempt, up to a cap of restarts;
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
      const pauseMs = Math.min(MAX_RATE_LIMIT_PAUSE_MS, Math.max(1, Math.ceil(error.retryAfterSeconds * 1000)));
      if (!run.pausesOn429) {
        await worker.rateLimit(pauseMs);
        throw Worker.RateLimitError();
      }
      // Pause the provider's queue, and put this job aside for as long, also without an attempt.
      await run.pausesOn429.rateLimit(pauseMs);
      await job.moveToDelayed(Date.now() + pauseMs, run.token);
      throw new DelayedError();
    }
  }
  if (isLastAttempt(job, error)) await onFinal(error);
  throw error;
}
