import { randomUUID } from 'node:crypto';
import { and, eq, getTableColumns, sql } from 'drizzle-orm';
import { audioGenerationBatches, audioSets, audioTracks, type SectionRequest } from '@soundqueue/shared/db/schema';
import { buildAudioBatchFlow } from '@soundqueue/shared/flows/audio-batch';
import { tuningFrom } from '@soundqueue/shared/queues';
import { batchCountersEvent, cancelBatch as cancelBatchRows, finaliseBatch, trackEvent } from '@soundqueue/shared/rollup/tracks';
import type { ApiContext } from '../context';
import { addFlowWithin } from '../enqueue';
import { checkBudget } from '../budget';
import { HttpError } from '../http-errors';
import { requestHash, requestHashBefore, type CreateBatchRequest } from './batch-request';

type Batch = typeof audioGenerationBatches.$inferSelect;
type Track = typeof audioTracks.$inferSelect;

/**
 * A batch's columns for the lists (the user's, the admin's): all of them, but each section
 * only as the view shows it, its key and title. A batch holds up to 14 texts of 20,000
 * characters; a page of 100 such batches read whole was some 28 MB fetched, parsed and
 * dropped per request (500 on the admin's list).
 */
export const listedBatch = {
  ...getTableColumns(audioGenerationBatches),
  sectionsRequested: sql<Pick<SectionRequest, 'key' | 'title'>[]>`(
    select coalesce(jsonb_agg(jsonb_build_object('key', e.s -> 'key', 'title', e.s -> 'title') order by e.n), '[]'::jsonb)
    from jsonb_array_elements(${audioGenerationBatches.sectionsRequested}) with ordinality as e(s, n))`,
};

function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: string; cause?: { code?: string } };
  return e.code === '23505' || e.cause?.code === '23505';
}

async function findByIdempotencyKey(ctx: ApiContext, userId: string, key: string): Promise<Batch | undefined> {
  const [row] = await ctx.db
    .select()
    .from(audioGenerationBatches)
    .where(and(eq(audioGenerationBatches.userId, userId), eq(audioGenerationBatches.idempotencyKey, key)));
  return row;
}

/**
 * Enqueues a run's flow. If Redis refuses, the tracks of the run fail with the reason and
 * the batch is finalised, so nothing waits forever for jobs that do not exist.
 */
async function enqueueRun(ctx: ApiContext, batchId: string, run: number, trackIds: string[]): Promise<void> {
  try {
    await addFlowWithin(ctx.flows, buildAudioBatchFlow(batchId, run, trackIds, tuningFrom(ctx.config)), ctx.config.ENQUEUE_TIMEOUT_MS);
  } catch (error) {
    const reason = `Could not enqueue the batch's jobs: ${(error as Error).message}`;
    ctx.logger.error({ err: error, batchId }, 'enqueue failed');
    // The reason is the batch's message, written as it is finalised (in the same statement,
    // so the events carry the row's version) and only if this run is the one finalised.
    const result = await finaliseBatch(ctx.db, batchId, { run, errorType: 'QueueError', reason: () => reason, errorMessage: reason });
    // Not awaited: Redis just refused us, and a stalled Redis would hold the 503 for the
    // events' own command timeout. The rows say failed already; the events follow.
    ctx.background.run(() => ctx.publish(result.events));
    // A retry's batch may end partial_success (tracks of earlier runs completed), and a
    // repeated POST with the same Idempotency-Key returns this batch as it is: the way to run
    // the tracks again is a retry of the batch.
    const ended = result.status ? `the batch is ${result.status}` : 'the batch was finalised meanwhile';
    throw new HttpError(
      503,
      'queue_unavailable',
      `${reason}. The tracks it was to run were recorded as failed (${ended}); retry them with POST /v1/audio/batches/${batchId}/retry once the queue is back.`,
      { batchId, status: result.status },
    );
  }
}

/** Creates a batch, its sets and tracks in one transaction, then enqueues its flow. */
export async function createBatch(
  ctx: ApiContext,
  userId: string,
  body: CreateBatchRequest,
  idempotencyKey: string | undefined,
): Promise<{ batch: Batch; created: boolean }> {
  const model = body.model ?? ctx.config.OPENAI_TTS_MODEL;
  if (idempotencyKey) {
    const existing = await findByIdempotencyKey(ctx, userId, idempotencyKey);
    if (existing) return sameOrConflict(existing, body);
  }
  await checkBudget(ctx.db, ctx.config, userId);
  const total = body.sections.length * body.variants.length;
  let created: { batch: Batch; trackIds: string[] };
  try {
    // The sets' ids are made here, so the batch row is written with them in its one insert
    // (not inserted, then updated once the sets exist).
    const setIds = body.variants.map(() => randomUUID());
    created = await ctx.db.transaction(async (tx) => {
      const [batch] = await tx
        .insert(audioGenerationBatches)
        .values({
          userId,
          visionId: body.visionId,
          variantIds: body.variants,
          voiceId: body.voice,
          model,
          sectionsRequested: body.sections.map((s) => ({ key: s.key, title: s.title ?? null, text: s.text })),
          totalTracksExpected: total,
          tracksPending: total,
          audioSetIds: setIds,
          idempotencyKey: idempotencyKey ?? null,
          requestHash: requestHash(body),
        })
        .returning();
      if (!batch) throw new Error('insert returned no batch');
      const sets = body.variants.map((variantId, i) => ({ id: setIds[i]!, batchId: batch.id, userId, variantId }));
      await tx.insert(audioSets).values(sets);
      const tracks = await tx
        .insert(audioTracks)
        .values(
          sets.flatMap((set) =>
            body.sections.map((s, sectionIndex) => ({
              batchId: batch.id,
              setId: set.id,
              userId,
              sectionIndex,
              sectionKey: s.key,
              sectionTitle: s.title ?? null,
              variantId: set.variantId,
            })),
          ),
        )
        .returning({ id: audioTracks.id });
      return { batch, trackIds: tracks.map((t) => t.id) };
    });
  } catch (error) {
    // Two requests with one Idempotency-Key raced: the loser answers with the winner's batch.
    if (idempotencyKey && isUniqueViolation(error)) {
      const existing = await findByIdempotencyKey(ctx, userId, idempotencyKey);
      if (existing) return sameOrConflict(existing, body);
    }
    throw error;
  }
  await enqueueRun(ctx, created.batch.id, 1, created.trackIds);
  return { batch: created.batch, created: true };
}

/** The batch an Idempotency-Key names, if `body` repeats its request; else a 409. */
function sameOrConflict(existing: Batch, body: CreateBatchRequest): { batch: Batch; created: boolean } {
  // Either rule: rows created before requestHash left out the default model hold the other.
  const same = existing.requestHash === requestHash(body) || existing.requestHash === requestHashBefore(body, existing.model);
  if (!same) {
    throw new HttpError(409, 'idempotency_conflict', 'this Idempotency-Key was already used with a different request body', {
      batchId: existing.id,
    });
  }
  return { batch: existing, created: false };
}

export async function getOwnedBatch(ctx: ApiContext, userId: string, batchId: string): Promise<Batch> {
  const [batch] = await ctx.db
    .select()
    .from(audioGenerationBatches)
    .where(and(eq(audioGenerationBatches.id, batchId), eq(audioGenerationBatches.userId, userId)));
  if (!batch) throw new HttpError(404, 'not_found', 'batch not found');
  return batch;
}

/**
 * A user's batch with every track, read in one snapshot (a read-only REPEATABLE READ
 * transaction): the counters then equal the tracks listed (DESIGN.md invariant 1). Read in two
 * statements, a track that ended between them was listed completed while the counters still
 * counted it pending. For GET /v1/audio/batches/:id and its event stream's snapshot.
 */
export async function getOwnedBatchWithTracks(ctx: ApiContext, userId: string, batchId: string): Promise<{ batch: Batch; tracks: Track[] }> {
  return ctx.db.transaction(
    async (tx) => {
      const [batch] = await tx
        .select()
        .from(audioGenerationBatches)
        .where(and(eq(audioGenerationBatches.id, batchId), eq(audioGenerationBatches.userId, userId)));
      if (!batch) throw new HttpError(404, 'not_found', 'batch not found');
      const tracks = await tx.select().from(audioTracks).where(eq(audioTracks.batchId, batchId));
      return { batch, tracks };
    },
    { isolationLevel: 'repeatable read', accessMode: 'read only' },
  );
}

const TERMINAL = ['completed', 'partial_success', 'failed', 'cancelled'];

/** Re-runs only the failed tracks of a finished batch, as a new run. */
export async function retryFailedTracks(ctx: ApiContext, userId: string, batchId: string): Promise<Batch> {
  const result = await ctx.db.transaction(async (tx) => {
    const [batch] = await tx
      .select()
      .from(audioGenerationBatches)
      .where(and(eq(audioGenerationBatches.id, batchId), eq(audioGenerationBatches.userId, userId)))
      .for('update');
    if (!batch) throw new HttpError(404, 'not_found', 'batch not found');
    if (!TERMINAL.includes(batch.status)) {
      throw new HttpError(409, 'batch_active', `batch is ${batch.status}; retry once it has finished`);
    }
    await checkBudget(tx, ctx.config, userId);
    const failed = await tx
      .update(audioTracks)
      .set({
        status: 'pending',
        mixStatus: 'pending',
        errorType: null,
        errorMessage: null,
        attempts: 0,
        startedAt: null,
        completedAt: null,
        // Voiced again by the new run (a cache hit when the rendition exists): with a voice
        // still attached, a pending track whose speech job is lost would look voiced to its
        // mix job, which then would not voice it (processAudioMix).
        renditionKey: null,
        voiceFileKey: null,
        updatedAt: sql`now()`,
      })
      .where(and(eq(audioTracks.batchId, batchId), eq(audioTracks.status, 'failed')))
      .returning();
    if (failed.length === 0) throw new HttpError(409, 'nothing_to_retry', 'batch has no failed tracks');
    const run = batch.run + 1;
    const [updated] = await tx
      .update(audioGenerationBatches)
      .set({
        run,
        status: 'processing',
        tracksFailed: sql`${audioGenerationBatches.tracksFailed} - ${failed.length}`,
        tracksPending: sql`${audioGenerationBatches.tracksPending} + ${failed.length}`,
        errorMessage: null,
        // The run starts now: the reconciler's STUCK_AFTER_MS counts from here, not from
        // the batch's creation (a retry of yesterday's batch is not stuck).
        startedAt: sql`now()`,
        completedAt: null,
        // A cancel was of the run before (it ended that run): none is pending for this one,
        // and the view must not say so while it runs. Tracks it cancelled stay cancelled.
        cancelRequestedAt: null,
        updatedAt: sql`now()`,
      })
      .where(eq(audioGenerationBatches.id, batchId))
      .returning();
    return { batch: updated!, tracks: failed, trackIds: failed.map((t) => t.id) };
  });
  await ctx.publish([
    {
      subject: { kind: 'batch', id: batchId },
      type: 'batch.retried',
      // The whole row state, version included, as every batch event carries it.
      data: { ...batchCountersEvent(result.batch).data, run: result.batch.run, tracksRetried: result.trackIds.length },
      // The log was on its short expiry since the end: the new run keeps it open again.
      reopens: true,
    },
    // Each retried track is pending again, its error cleared: a change like any other, so a
    // client that follows tracks by their events sees it now, not when the track next moves.
    ...result.tracks.map(trackEvent),
  ]);
  await enqueueRun(ctx, batchId, result.batch.run, result.trackIds);
  return result.batch;
}

/**
 * Cancels what has not started: pending tracks become cancelled; tracks already generating
 * or mixing finish. The batch ends `cancelled` once its running tracks have ended. Decided
 * under the batch row's lock (cancelBatch in rollup/tracks.ts): a batch that ended while the
 * request was on its way is a 409, as any finished batch is.
 */
export async function cancelBatch(ctx: ApiContext, userId: string, batchId: string): Promise<Batch> {
  const result = await cancelBatchRows(ctx.db, batchId, userId);
  if (result.outcome === 'not_found') throw new HttpError(404, 'not_found', 'batch not found');
  if (result.outcome === 'finished') throw new HttpError(409, 'batch_finished', `batch already ${result.status}`);
  await ctx.publish(result.events);
  return getOwnedBatch(ctx, userId, batchId);
}
