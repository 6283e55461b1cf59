import { eq } from 'drizzle-orm';
import { Router } from 'express';
import { audioTracks } from '@soundqueue/shared/db/schema';
import { getOwnedBatch } from '../batches/batch-service';
import { batchView } from '../batches/batch.view';
import { getOwnedBook } from '../books/book-service';
import { bookView } from '../books/book.view';
import type { ApiContext } from '../context';
import { parseId } from '../ids';
import { streamEvents } from '../events/sse';

const BATCH_TERMINAL = ['completed', 'partial_success', 'failed', 'cancelled'];

export function eventRoutes(ctx: ApiContext): Router {
  const router = Router();

  // EventSource cannot send an Authorization header: a page trades its token for a
  // short-lived one it may put in the stream's URL (?access_token=...).
  router.post('/stream-tokens', async (req, res) => {
    const ttl = ctx.config.STREAM_TOKEN_TTL_SECONDS;
    const token = await ctx.auth.sign(req.principal!, `${ttl}s`);
    res.status(201).json({ token, expires_in: ttl });
  });

  router.get('/audio/batches/:id/events', async (req, res) => {
    const userId = req.principal!.userId;
    const batch = await getOwnedBatch(ctx, userId, parseId(req.params.id, 'batch'));
    await streamEvents(req, res, {
      hub: ctx.events,
      subject: { kind: 'batch', id: batch.id },
      heartbeatMs: ctx.config.SSE_HEARTBEAT_MS,
      snapshot: async () => {
        const current = await getOwnedBatch(ctx, userId, batch.id);
        const tracks = await ctx.db.select().from(audioTracks).where(eq(audioTracks.batchId, batch.id));
        return { data: batchView(current, tracks), terminal: BATCH_TERMINAL.includes(current.status) };
      },
    });
  });

  router.get('/books/:id/events', async (req, res) => {
    const userId = req.principal!.userId;
    const book = await getOwnedBook(ctx, userId, parseId(req.params.id, 'book'));
    await streamEvents(req, res, {
      hub: ctx.events,
      subject: { kind: 'book', id: book.id },
      heartbeatMs: ctx.config.SSE_HEARTBEAT_MS,
      snapshot: async () => {
        const current = await getOwnedBook(ctx, userId, book.id);
        return { data: bookView(current), terminal: ['ready', 'failed'].includes(current.status) };
      },
    });
  });

  return router;
}
