import { and, asc, desc, eq, inArray, type SQL } from 'drizzle-orm';
import express, { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import { books, bookStatuses, scenes, soundscapes } from '@soundqueue/shared/db/schema';
import { readBookInput, uploadMiddleware } from '../books/book-input';
import { createBook, getOwnedBook, restartBook } from '../books/book-service';
import { bookView, sceneView } from '../books/book.view';
import type { ApiContext } from '../context';
import { HttpError, validate } from '../http-errors';
import { afterCursor, cursorTime, pageLimit, pageOf, parseId } from '../ids';
import { sendStoredAudio } from '../send-audio';

/** GET /books's query (the OpenAPI document's parameters are made from it). */
export const bookListQuery = z.object({
  status: z.enum(bookStatuses, { message: `must be one of ${bookStatuses.join(', ')}` }).optional(),
  limit: pageLimit(100, 20),
  cursor: z.string().max(200).optional(),
});

export function bookRoutes(ctx: ApiContext): Router {
  const router = Router();
  const userOf = (req: express.Request) => req.principal!.userId;
  const upload = uploadMiddleware(ctx.config.BOOK_MAX_UPLOAD_BYTES);
  // Books are bigger than batches: JSON pages get the upload limit too.
  const bookJson = express.json({ limit: ctx.config.BOOK_MAX_UPLOAD_BYTES });
  const bookBody: RequestHandler = (req, res, next) => {
    if (req.is('application/json')) return bookJson(req, res, next);
    if (req.is('multipart/form-data')) return upload(req, res, next);
    next(new HttpError(415, 'unsupported_media_type', 'send application/json pages or a multipart/form-data upload of a .txt or .pdf'));
  };

  router.post('/books', bookBody, async (req, res) => {
    const input = await readBookInput(req, ctx.config.BOOK_MAX_PAGES);
    const book = await createBook(ctx, userOf(req), input);
    res.status(202).location(`/v1/books/${book.id}`).json(bookView(book));
  });

  router.get('/books', async (req, res) => {
    const query = validate(bookListQuery, req.query, 'query');
    const conditions: SQL[] = [eq(books.userId, userOf(req))];
    if (query.status) conditions.push(eq(books.status, query.status));
    if (query.cursor) conditions.push(afterCursor(books.createdAt, books.id, query.cursor));
    const rows = await ctx.db
      .select({ book: books, cursorAt: cursorTime(books.createdAt) })
      .from(books)
      .where(and(...conditions))
      .orderBy(desc(books.createdAt), desc(books.id))
      .limit(query.limit + 1);
    const { page, nextCursor } = pageOf(rows, query.limit, (r) => r.book.id);
    res.json({ books: page.map((r) => bookView(r.book)), nextCursor });
  });

  router.get('/books/:id', async (req, res) => {
    res.json(bookView(await getOwnedBook(ctx, userOf(req), parseId(req.params.id, 'book'))));
  });

  router.post('/books/:id/soundscapes', async (req, res) => {
    const book = await restartBook(ctx, userOf(req), parseId(req.params.id, 'book'));
    res.status(202).json(bookView(book));
  });

  router.get('/books/:id/scenes', async (req, res) => {
    const book = await getOwnedBook(ctx, userOf(req), parseId(req.params.id, 'book'));
    const rows = await ctx.db.select().from(scenes).where(eq(scenes.bookId, book.id)).orderBy(asc(scenes.index));
    const sounds = rows.length
      ? await ctx.db.select().from(soundscapes).where(inArray(soundscapes.sceneId, rows.map((r) => r.id)))
      : [];
    res.json({
      bookId: book.id,
      status: book.status,
      scenes: rows.map((scene) => sceneView(scene, sounds.find((s) => s.sceneId === scene.id) ?? null)),
    });
  });

  router.get('/soundscapes/:id/audio', async (req, res) => {
    const id = parseId(req.params.id, 'soundscape');
    const [row] = await ctx.db.select().from(soundscapes).where(and(eq(soundscapes.id, id), eq(soundscapes.userId, userOf(req))));
    if (!row) throw new HttpError(404, 'not_found', 'soundscape not found');
    if (row.status !== 'completed' || !row.fileKey) throw new HttpError(409, 'audio_not_ready', `soundscape is ${row.status}`);
    // The row's own key, which the job that completed it recorded (storage/types.ts: one file per claim).
    await sendStoredAudio(req, res, ctx.storage, row.fileKey, `soundscape-${row.id}.mp3`, {
      idleTimeoutMs: ctx.config.AUDIO_IDLE_TIMEOUT_MS,
    });
  });

  return router;
}
