import { and, desc, eq, inArray, type SQL } from 'drizzle-orm';
import { Router, type Request } from 'express';
import { z } from 'zod';
import { audioGenerationBatches, audioSets, audioTracks, batchStatuses } from '@soundqueue/shared/db/schema';
import { createBatchSchema } from '../batches/batch-request';
import { cancelBatch, createBatch, getOwnedBatchWithTracks, listedBatch, retryFailedTracks } from '../batches/batch-service';
import { batchView, trackView } from '../batches/batch.view';
import type { ApiContext } from '../context';
import { HttpError, requireJson, validate } from '../http-errors';
import { afterCursor, cursorTime, pageLimit, pageOf, parseId } from '../ids';
import { sendStoredAudio } from '../send-audio';

/** GET /audio/batches's query (the OpenAPI document's parameters are made from it). */
export const batchListQuery = z.object({
  visionId: z.string().min(1).max(200).optional(),
  status: z.enum([...batchStatuses, 'active'], { message: `must be one of ${[...batchStatuses, 'active'].join(', ')}` }).optional(),
  limit: pageLimit(100, 20),
  cursor: z.string().max(200).optional(),
});

const idempotencyKeyOf = (req: Request): string | undefined => {
  const key = req.get('Idempotency-Key');
  if (key === undefined) return undefined;
  if (key.length < 1 || key.length > 200) {
    throw new HttpError(400, 'validation_failed', 'Idempotency-Key must be 1 to 200 characters', [
      { path: 'headers.idempotency-key', message: 'must be 1 to 200 characters' },
    ]);
  }
  return key;
};

const userOf = (req: Request) => req.principal!.userId;

export function batchRoutes(ctx: ApiContext): Router {
  const router = Router();

  router.post('/audio/batches', requireJson, async (req, res) => {
    const body = validate(createBatchSchema, req.body);
    const { batch, created } = await createBatch(ctx, userOf(req), body, idempotencyKeyOf(req));
    res.status(created ? 201 : 200).location(`/v1/audio/batches/${batch.id}`).json(batchView(batch));
  });

  router.get('/audio/batches', async (req, res) => {
    const query = validate(batchListQuery, req.query, 'query');
    const conditions: SQL[] = [eq(audioGenerationBatches.userId, userOf(req))];
    if (query.visionId) conditions.push(eq(audioGenerationBatches.visionId, query.visionId));
    if (query.status === 'active') conditions.push(inArray(audioGenerationBatches.status, ['pending', 'processing']));
    else if (query.status) conditions.push(eq(audioGenerationBatches.status, query.status));
    if (query.cursor) conditions.push(afterCursor(audioGenerationBatches.createdAt, audioGenerationBatches.id, query.cursor));
    const rows = await ctx.db
      .select({ batch: listedBatch, cursorAt: cursorTime(audioGenerationBatches.createdAt) })
      .from(audioGenerationBatches)
      .where(and(...conditions))
      .orderBy(desc(audioGenerationBatches.createdAt), desc(audioGenerationBatches.id))
      .limit(query.limit + 1);
    const { page, nextCursor } = pageOf(rows, query.limit, (r) => r.batch.id);
    res.json({ batches: page.map((r) => batchView(r.batch)), next_cursor: nextCursor });
  });

  router.get('/audio/batches/:id', async (req, res) => {
    const { batch, tracks } = await getOwnedBatchWithTracks(ctx, userOf(req), parseId(req.params.id, 'batch'));
    res.json(batchView(batch, tracks));
  });

  router.post('/audio/batches/:id/retry', async (req, res) => {
    const batch = await retryFailedTracks(ctx, userOf(req), parseId(req.params.id, 'batch'));
    res.status(202).json(batchView(batch));
  });

  router.post('/audio/batches/:id/cancel', async (req, res) => {
    const batch = await cancelBatch(ctx, userOf(req), parseId(req.params.id, 'batch'));
    res.status(202).json(batchView(batch));
  });

  router.get('/audio/sets/:id', async (req, res) => {
    const id = parseId(req.params.id, 'audio set');
    const [set] = await ctx.db
      .select()
      .from(audioSets)
      .where(and(eq(audioSets.id, id), eq(audioSets.userId, userOf(req))));
    if (!set) throw new HttpError(404, 'not_found', 'audio set not found');
    const tracks = await ctx.db.select().from(audioTracks).where(eq(audioTracks.setId, set.id));
    res.json({
      id: set.id,
      batch_id: set.batchId,
      variant_id: set.variantId,
      created_at: set.createdAt,
      tracks: tracks.sort((a, b) => a.sectionIndex - b.sectionIndex).map(trackView),
    });
  });

  router.get('/audio/tracks/:id/audio', async (req, res) => {
    const id = parseId(req.params.id, 'track');
    const [track] = await ctx.db
      .select()
      .from(audioTracks)
      .where(and(eq(audioTracks.id, id), eq(audioTracks.userId, userOf(req))));
    if (!track) throw new HttpError(404, 'not_found', 'track not found');
    if (track.status !== 'completed' || !track.mixedFileKey) {
      throw new HttpError(409, 'audio_not_ready', `track is ${track.status}; its audio exists once it is completed`);
    }
    // The key comes from our own row, never from the URL, so no path can be smuggled in; and
    // from the row, not computed from the ids: each mix is stored under a key of its own
    // (storageKeys.track), and mixes stored before that have keys of another form.
    await sendStoredAudio(req, res, ctx.storage, track.mixedFileKey, `${track.sectionKey}-${track.variantId}.mp3`, {
      idleTimeoutMs: ctx.config.AUDIO_IDLE_TIMEOUT_MS,
    });
  });

  return router;
}
