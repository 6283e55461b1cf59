import type { EventEmitter } from 'node:events';
import { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '@soundqueue/shared/config';
import type { Logger } from '@soundqueue/shared/logger';
import { isQueueName, queueNames, type QueueName } from '@soundqueue/shared/queues';
import { createWorkerConnection, logConnectionState } from '@soundqueue/shared/redis';
import type { WorkerContext } from './context';
import { jobDuration } from './metrics';
import { handlers } from './handlers';
import { toJobError } from '@soundqueue/shared/errors';
import { keepReconcilerScheduled, scheduleReconciler, warnIfEvicting } from './reconciler';

/**
 * Which queues this process runs: WORKER_QUEUES (comma-separated) or all of them. Names are
 * read in any case, as every setting that takes one of a few words is (config.ts's choice());
 * the queues' own names are lower case.
 */
export function selectQueues(list: string | undefined): QueueName[] {
  if (!list) return [...queueNames];
  const given = list.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = given.filter((n) => !isQueueName(n.toLowerCase()));
  if (unknown.length > 0) {
    throw new Error(`WORKER_QUEUES names unknown queue(s): ${unknown.join(', ')}. Known: ${queueNames.join(', ')}`);
  }
  if (given.length === 0) throw new Error('WORKER_QUEUES is empty');
  return [...new Set(given.map((n) => n.toLowerCase()))] as QueueName[];
}

export function concurrencyFor(config: Config, queue: QueueName): number {
  const byQueue: Record<QueueName, number> = {
    'audio-tts': config.WORKER_CONCURRENCY_AUDIO_TTS,
    'audio-mix': config.WORKER_CONCURRENCY_AUDIO_MIX,
    'audio-batch': config.WORKER_CONCURRENCY_AUDIO_BATCH,
    'book-analyze': config.WORKER_CONCURRENCY_BOOK_ANALYZE,
    soundscape: config.WORKER_CONCURRENCY_SOUNDSCAPE,
    book: config.WORKER_CONCURRENCY_BOOK,
    webhooks: config.WORKER_CONCURRENCY_WEBHOOKS,
    maintenance: 1,
  };
  return byQueue[queue];
}

/**
 * A limiter that never binds. BullMQ honours a queue's pause (what a provider's 429 sets, see
 * job-failure.ts) only in workers that have a limiter: without one, the pause held back just
 * the worker that saw the 429, and every other replica went on calling the provider.
 */
const NO_RATE_LIMIT = { max: 1_000_000_000, duration: 1_000 };

/**
 * The provider queues' rate limits, or one that never binds; BullMQ keeps them in Redis, so
 * they and a 429's pause hold across replicas.
 */
export function limiterFor(config: Config, queue: QueueName): { max: number; duration: number } | undefined {
  if (queue === 'audio-tts') return config.TTS_RATE_LIMIT ?? NO_RATE_LIMIT;
  if (queue === 'book-analyze') return config.ANALYSIS_RATE_LIMIT ?? NO_RATE_LIMIT;
  if (queue === 'soundscape') return config.SOUNDSCAPE_RATE_LIMIT ?? NO_RATE_LIMIT;
  return undefined;
}

/**
 * Worker.close() stops listening for 'error' on the worker's two connection handles (BullMQ's
 * RedisConnection over ours, and over the blocking duplicate it makes), yet a handle whose
 * start had not finished (still connecting, or waiting for its INFO) reports that start
 * failing, once its connection closes, on that very event; an 'error' event nobody listens for
 * throws, here an unhandled rejection that ends the process: a worker stopped just after it
 * started, or while Redis was unreachable, exited 1. Waiting for the start before closing is no
 * way out (with Redis away it may never come), so the handles get a listener back once closed.
 * A worker's jobs and how it finishes them are untouched. BullMQ keeps both handles private
 * (5.81), hence the cast; tests/ops/worker-close-while-starting.test.ts notices if they move.
 */
async function closeWorker(worker: Worker, logger: Logger): Promise<void> {
  await worker.close();
  const handles = worker as unknown as { connection?: EventEmitter; blockingConnection?: EventEmitter };
  for (const handle of [handles.connection, handles.blockingConnection]) {
    handle?.on('error', (error: Error) => logger.debug({ err: error.message, queue: worker.name }, 'worker connection ended before it had started'));
  }
}

export interface RunningWorkers {
  workers: Worker[];
  close(): Promise<void>;
}

/**
 * Starts one BullMQ worker per queue, each on its own blocking connection. The process that
 * runs the maintenance queue also keeps the reconciler's schedule.
 */
export async function startWorkers(ctx: WorkerContext, queues: QueueName[]): Promise<RunningWorkers> {
  await warnIfEvicting(ctx);
  if (queues.includes('maintenance')) await scheduleReconciler(ctx);
  const stopScheduling = queues.includes('maintenance') ? keepReconcilerScheduled(ctx) : () => {};
  const connections: Redis[] = [];
  const workers = queues.map((queue) => {
    const connection = createWorkerConnection(ctx.config.REDIS_URL);
    connections.push(connection);
    logConnectionState(connection, ctx.logger, queue);
    const worker: Worker = new Worker(
      queue,
      async (job, token) => {
        try {
          return await handlers[queue](ctx, { job, token, worker, maxRateLimitRestarts: ctx.config.RATE_LIMIT_MAX_RESTARTS });
        } catch (error) {
          // The one place a processor's failure becomes the job's: UnrecoverableError when
          // retrying cannot help, and a failed query's reason rather than its SQL (Bull Board).
          throw toJobError(error);
        }
      },
      {
        connection,
        prefix: ctx.config.QUEUE_PREFIX,
        concurrency: concurrencyFor(ctx.config, queue),
        lockDuration: ctx.config.WORKER_LOCK_DURATION_MS,
        stalledInterval: ctx.config.WORKER_STALLED_INTERVAL_MS,
        maxStalledCount: ctx.config.WORKER_MAX_STALLED_COUNT,
        autorun: true,
        limiter: limiterFor(ctx.config, queue),
      },
    );
    worker.on('completed', (job) => {
      if (job.processedOn && job.finishedOn) jobDuration.observe({ queue, outcome: 'completed' }, (job.finishedOn - job.processedOn) / 1000);
    });
    worker.on('failed', (job, error) => {
      if (job?.processedOn) jobDuration.observe({ queue, outcome: 'failed' }, ((job.finishedOn ?? Date.now()) - job.processedOn) / 1000);
      ctx.logger.warn({ queue, jobId: job?.id, attemptsMade: job?.attemptsMade, err: error.message }, 'job attempt failed');
    });
    worker.on('error', (error) => {
      // Closing a worker whose start is still under way (a SIGTERM just after start) fails
      // that start on the connection close() itself ends: an outcome of the stop, not a fault.
      if (worker.closing && error.message === 'Connection is closed.') {
        return ctx.logger.debug({ err: error.message, queue }, 'worker connection closed while it was starting');
      }
      ctx.logger.error({ err: error, queue }, 'worker error');
    });
    return worker;
  });
  return {
    workers,
    async close() {
      stopScheduling();
      await Promise.all(workers.map((w) => closeWorker(w, ctx.logger)));
      // BullMQ leaves a connection it was handed open; these are ours to close.
      for (const connection of connections) connection.disconnect();
    },
  };
}
