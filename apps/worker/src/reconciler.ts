import { and, eq, inArray, lt, sql } from 'drizzle-orm';
import { audioGenerationBatches, audioTracks, books, bookSpreads, webhookDeliveries } from '@soundqueue/shared/db/schema';
import { buildAudioBatchFlow } from '@soundqueue/shared/flows/audio-batch';
import { buildBookFlow } from '@soundqueue/shared/flows/book';
import { jobId, tuningFrom, webhookJobOptions } from '@soundqueue/shared/queues';
import { finaliseBatch } from '@soundqueue/shared/rollup/tracks';
import { finaliseBook, removeVoidedFiles } from '@soundqueue/shared/rollup/books';
import { FlowProducer } from 'bullmq';
import type { WorkerContext } from './context';
import { findLostChild, removeStrandedRoot } from './lost-children';
import { removeUnnamedTrackFiles } from './unrecorded-files';

export interface ReconcileReport {
  batchesRequeued: string[];
  booksRequeued: string[];
  batchesTimedOut: string[];
  booksTimedOut: string[];
  webhooksRequeued: string[];
  /** Items this pass could not handle (logged); the next pass tries them again. */
  errors: { kind: 'batch' | 'book' | 'webhook'; id: string; message: string }[];
}

/**
 * Whether Redis still holds a live root job for this run: not missing, not failed for good,
 * and not waiting for a job Redis lost. A root of that last kind is removed here, so that it
 * is missing from then on (this pass and the next) and a new run takes its work over.
 */
async function rootAlive(ctx: WorkerContext, queue: 'audio-batch' | 'book', id: string): Promise<boolean> {
  // The job's own data first: getJobState only looks for the id in the state lists, and an id
  // listed without its data (the key evicted under a maxmemory policy, or deleted by hand)
  // looks alive there ('waiting-children') while no job will ever run.
  const job = await ctx.queues[queue].getJob(id);
  if (!job) return false;
  const state = await job.getState();
  if (state === 'unknown' || state === 'failed' || state === 'completed') return false;
  if (state !== 'waiting-children') return true;
  // The same loss one level down or more: a child (or a child's child) it waits for whose
  // data is gone. Children waiting, delayed or running are there and leave it alive.
  const lost = await findLostChild(ctx.redis, Object.values(ctx.queues), ctx.queues[queue].toKey(id));
  if (!lost) return true;
  await removeStrandedRoot(ctx.redis, Object.values(ctx.queues), ctx.queues[queue], id);
  ctx.logger.warn({ root: id, lost }, 'a root job waited for a job Redis no longer held; removed it for a new run');
  return false;
}

/**
 * PostgreSQL is the source of truth (DESIGN.md invariant 4). Finds batches and books the
 * database calls unfinished whose root job Redis no longer holds (Redis restarted empty,
 * jobs removed, a root failed for good, a root waiting for a job Redis lost) and re-enqueues
 * exactly their unfinished work as a new run; fails work stuck past STUCK_AFTER_MS with a
 * message saying so.
 */
export async function reconcile(ctx: WorkerContext): Promise<ReconcileReport> {
  const report: ReconcileReport = { batchesRequeued: [], booksRequeued: [], batchesTimedOut: [], booksTimedOut: [], webhooksRequeued: [], errors: [] };
  // One item that cannot be handled (a deadlock with a job finishing at that moment, a row
  // PostgreSQL refuses to update, Redis refusing a flow) must not stop the pass: everything
  // after it would wait for a pass that gets past it.
  const each = async <T>(kind: 'batch' | 'book' | 'webhook', items: T[], id: (item: T) => string, handle: (item: T) => Promise<void>) => {
    for (const item of items) {
      try {
        await handle(item);
      } catch (error) {
        // The innermost cause says why (a query error's own message is the whole query).
        let cause: unknown = error;
        while (cause instanceof Error && cause.cause) cause = cause.cause;
        const message = cause instanceof Error ? cause.message : String(cause);
        ctx.logger.error({ err: error, kind, id: id(item) }, 'reconciler could not handle this item; the next pass tries again');
        report.errors.push({ kind, id: id(item), message });
      }
    }
  };
  const graceCutoff = new Date(Date.now() - ctx.config.RECONCILE_GRACE_MS);
  const stuckCutoff = new Date(Date.now() - ctx.config.STUCK_AFTER_MS);
  const tuning = tuningFrom(ctx.config);
  const flows = new FlowProducer({ connection: ctx.redis, prefix: ctx.config.QUEUE_PREFIX });
  flows.on('error', (error) => ctx.logger.debug({ err: error.message }, 'flow producer error'));
  try {
    const batches = await ctx.db
      .select()
      .from(audioGenerationBatches)
      .where(and(inArray(audioGenerationBatches.status, ['pending', 'processing']), lt(audioGenerationBatches.updatedAt, graceCutoff)));
    await each('batch', batches, (b) => b.id, async (batch) => {
      // A run's age counts from its start (a retry resets started_at), as for books.
      if ((batch.startedAt ?? batch.createdAt) < stuckCutoff) {
        const hours = Math.round(ctx.config.STUCK_AFTER_MS / 360_000) / 10;
        const reason = `The track did not finish within ${hours} h and was stopped; retry the batch's failed tracks.`;
        // Under the batch's lock and only for the run read here (a retry in between started a
        // new run, which is not stuck).
        const result = await finaliseBatch(ctx.db, batch.id, { run: batch.run, errorType: 'TimeoutError', reason: () => reason });
        await ctx.publish(result.events);
        // Its root may never run (lost with Redis); the mixes no track names go now.
        if (result.status) await removeUnnamedTrackFiles(ctx, batch.id, batch.run);
        if (result.events.length > 0) report.batchesTimedOut.push(batch.id);
        return;
      }
      if (await rootAlive(ctx, 'audio-batch', jobId.audioBatch(batch.id, batch.run))) return;
      const open = await ctx.db.select({ id: audioTracks.id }).from(audioTracks).where(and(eq(audioTracks.batchId, batch.id), inArray(audioTracks.status, ['pending', 'generating', 'mixing'])));
      // Only the run read above of a batch still unfinished: a retry may have started the next
      // run meanwhile, or the root ended the batch (a root that has finished is not alive
      // either), and a new run of a finished batch would only queue jobs with nothing to do.
      const [bumped] = await ctx.db
        .update(audioGenerationBatches)
        .set({ run: sql`${audioGenerationBatches.run} + 1`, updatedAt: sql`now()` })
        .where(and(eq(audioGenerationBatches.id, batch.id), eq(audioGenerationBatches.run, batch.run), inArray(audioGenerationBatches.status, ['pending', 'processing'])))
        .returning({ run: audioGenerationBatches.run });
      if (!bumped) return;
      await flows.add(buildAudioBatchFlow(batch.id, bumped.run, open.map((t) => t.id), tuning));
      ctx.logger.warn({ batchId: batch.id, run: bumped.run, tracks: open.length }, 'reconciler re-enqueued a batch whose jobs Redis no longer held');
      report.batchesRequeued.push(batch.id);
    });

    const unfinishedBooks = await ctx.db
      .select()
      .from(books)
      .where(and(inArray(books.status, ['pending', 'processing']), lt(books.updatedAt, graceCutoff)));
    await each('book', unfinishedBooks, (b) => b.id, async (book) => {
      if ((book.startedAt ?? book.createdAt) < stuckCutoff) {
        const message = 'Processing did not finish in time and was stopped; start generation again.';
        const reason = { message, stack: null, attempt: 0 };
        // One transaction under the book row's lock, for this run only: a root of the same
        // run that finalises meanwhile, or a restart after it, leaves nothing to do here.
        const result = await finaliseBook(ctx.db, book.id, {}, {
          run: book.run,
          spreads: { ...reason, errorType: 'ContentAnalysisError' },
          soundscapes: { ...reason, errorType: 'SoundscapeGenerationError' },
        });
        await removeVoidedFiles(ctx.storage, ctx.logger, result.voidedFiles);
        await ctx.publish(result.events);
        if (result.status) report.booksTimedOut.push(book.id);
        return;
      }
      if (await rootAlive(ctx, 'book', jobId.book(book.id, book.run))) return;
      const spreads = await ctx.db.select({ index: bookSpreads.index }).from(bookSpreads).where(and(eq(bookSpreads.bookId, book.id), inArray(bookSpreads.status, ['pending', 'analyzing'])));
      // As for batches: only the run read above, of a book still unfinished.
      const [bumped] = await ctx.db
        .update(books)
        .set({ run: sql`${books.run} + 1`, updatedAt: sql`now()` })
        .where(and(eq(books.id, book.id), eq(books.run, book.run), inArray(books.status, ['pending', 'processing'])))
        .returning({ run: books.run });
      if (!bumped) return;
      // The new root segments again: finished spreads and soundscapes are kept, and only
      // the unfinished ones get jobs.
      await flows.add(buildBookFlow(book.id, bumped.run, spreads.map((s) => s.index), tuning));
      ctx.logger.warn({ bookId: book.id, run: bumped.run, spreads: spreads.length }, 'reconciler re-enqueued a book whose jobs Redis no longer held');
      report.booksRequeued.push(book.id);
    });
    // Webhook deliveries recorded but without a job: Redis refused the job when the event was
    // dispatched (the transition had committed, so nothing dispatches it again), or lost it
    // since, or its job failed for good while the row still has attempts (the database refused
    // to count them, so none was sent): such a job would hold the delivery until retention
    // removes it, days later, and is removed first. Queued again under their own job id; one
    // whose job is live (waiting, delayed for its next attempt, running) is left alone. The new
    // job goes on from the attempts the row counts (processors/webhook.ts): queuing again adds
    // none, and its backoff goes on from there too (webhookJobOptions). The time since the last
    // attempt is the database's, as updated_at is.
    const pendingDeliveries = await ctx.db
      .select({
        id: webhookDeliveries.id,
        attempts: webhookDeliveries.attempts,
        idleMs: sql<number>`extract(epoch from now() - ${webhookDeliveries.updatedAt}) * 1000`.mapWith(Number),
      })
      .from(webhookDeliveries)
      .where(and(eq(webhookDeliveries.status, 'pending'), lt(webhookDeliveries.updatedAt, graceCutoff)));
    await each('webhook', pendingDeliveries, (d) => d.id, async ({ id, attempts, idleMs }) => {
      const deliveryJob = jobId.webhook(id);
      const state = await ctx.queues.webhooks.getJobState(deliveryJob);
      if (state === 'failed') await ctx.queues.webhooks.remove(deliveryJob);
      else if (state !== 'unknown') return;
      await ctx.queues.webhooks.add('deliver', { deliveryId: id }, { ...webhookJobOptions(tuning, attempts, idleMs), jobId: deliveryJob });
      report.webhooksRequeued.push(id);
    });
  } finally {
    await flows.close();
  }
  return report;
}

/** The maintenance queue's repeatable jobs: each task and how often it runs. */
const schedules = (ctx: WorkerContext) =>
  [
    { task: 'reconcile', every: ctx.config.RECONCILE_INTERVAL_MS },
    { task: 'sweep-storage', every: ctx.config.STORAGE_SWEEP_INTERVAL_MS },
  ] as const;

/** Starts the repeatable maintenance jobs, the reconciler's and the storage sweep's (BullMQ job schedulers: one schedule each, however many workers). */
export async function scheduleReconciler(ctx: WorkerContext): Promise<void> {
  for (const { task, every } of schedules(ctx)) {
    await ctx.queues.maintenance.upsertJobScheduler(task, { every }, { name: task, data: { task }, opts: { removeOnComplete: { count: 20 }, removeOnFail: { count: 100 } } });
  }
}

/**
 * The schedule lives in Redis, so Redis restarted empty (or flushed) takes it away, and with
 * it the one thing that would re-enqueue the lost work: nothing ran `reconcile` again until a
 * worker restarted. The process that runs the maintenance queue checks every interval and
 * puts a missing schedule back. Returns the function that stops checking.
 */
export function keepReconcilerScheduled(ctx: WorkerContext): () => void {
  const timer = setInterval(() => {
    void (async () => {
      const present = await Promise.all(schedules(ctx).map(({ task }) => ctx.queues.maintenance.getJobScheduler(task)));
      if (present.every(Boolean)) return;
      await scheduleReconciler(ctx);
      ctx.logger.warn('the maintenance schedules were missing from Redis (restarted empty or flushed); scheduled them again');
    })().catch((error: unknown) => ctx.logger.warn({ err: error }, 'could not check the reconciler schedule'));
  }, ctx.config.RECONCILE_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** Jobs vanish when Redis evicts keys: warn when the policy allows it. */
export async function warnIfEvicting(ctx: WorkerContext): Promise<void> {
  try {
    const [, policy] = (await ctx.redis.config('GET', 'maxmemory-policy')) as [string, string];
    if (policy && policy !== 'noeviction') {
      ctx.logger.warn({ policy }, `Redis maxmemory-policy is "${policy}": under memory pressure Redis may evict queued jobs. Set maxmemory-policy noeviction.`);
    }
  } catch {
    // Managed Redis services may refuse CONFIG; nothing to check then.
  }
}
