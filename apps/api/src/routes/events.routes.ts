import { Router, type RequestHandler } from 'express';
import { getOwnedBatchWithTracks } from '../batches/batch-service';
import { batchView } from '../batches/batch.view';
import { getOwnedBook } from '../books/book-service';
import { bookView } from '../books/book.view';
import type { ApiContext } from '../context';
import { parseId } from '../ids';
import { answerStreamHead, streamEvents, type Snapshot } from '../events/sse';
import { mintedLifetime } from '../auth';

const BATCH_TERMINAL = ['completed', 'partial_success', 'failed', 'cancelled'];

export function eventRoutes(ctx: ApiContext): Router {
  const router = Router();

  // EventSource cannot send an Authorization header: a page trades its token for a
  // short-lived one it may put in the stream's URL (?access_token=...), good on streams only.
  router.post('/stream-tokens', async (req, res) => {
    const ttl = mintedLifetime(req.tokenExpiresAt, ctx.config.STREAM_TOKEN_TTL_SECONDS);
    const token = await ctx.auth.signStream(req.principal!, `${ttl}s`);
    res.status(201).json({ token, expires_in: ttl });
  });

  // One stream per batch or book: check ownership once, then snapshot the current state
  // whenever the stream (re)starts. The user's slot is taken first, so a user at the cap
  // costs no database read, and given back when the response closes, a 404 included. The cap
  // counts the user's streams on every API process (stream-slots.ts).
  const stream =
    (kind: 'batch' | 'book', state: (userId: string, id: string) => Promise<Snapshot>): RequestHandler =>
    async (req, res) => {
      const userId = req.principal!.userId;
      if (req.method === 'HEAD') {
        // Express hands HEAD to GET routes: answered as the stream would start (429 at the
        // cap, 404 for someone else's, 204 for a client that has everything), without opening
        // one. Opened, it held one of the user's slots and a subscription, with no body to
        // send, until the batch or book ended.
        await ctx.streams.refuseAtCap(res, userId);
        const id = parseId(req.params.id, kind);
        await state(userId, id); // 404 first, as for the GET
        await answerStreamHead(req, res, { hub: ctx.events, subject: { kind, id }, snapshot: () => state(userId, id) });
        return;
      }
      if (!(await ctx.streams.admit(req, res, userId))) return;
      const id = parseId(req.params.id, kind);
      await state(userId, id); // 404 before the stream starts
      await streamEvents(req, res, {
        hub: ctx.events,
        subject: { kind, id },
        heartbeatMs: ctx.config.SSE_HEARTBEAT_MS,
        shutdown: ctx.streams.shutdown,
        snapshot: () => state(userId, id),
      });
    };

  router.get(
    '/audio/batches/:id/events',
    stream('batch', async (userId, id) => {
      const { batch, tracks } = await getOwnedBatchWithTracks(ctx, userId, id);
      return { data: batchView(batch, tracks), terminal: BATCH_TERMINAL.includes(batch.status), run: batch.run };
    }),
  );

  router.get(
    '/books/:id/events',
    stream('book', async (userId, id) => {
      const book = await getOwnedBook(ctx, userId, id);
      return { data: bookView(book), terminal: ['ready', 'failed'].includes(book.status), run: book.run };
    }),
  );

  return router;
}
