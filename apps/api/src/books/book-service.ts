import { and, eq, sql } from 'drizzle-orm';
import { books, bookSpreads, type ProcessingError } from '@soundqueue/shared/db/schema';
import { buildBookFlow } from '@soundqueue/shared/flows/book';
import { toSpreads } from '@soundqueue/shared/pages';
import { tuningFrom } from '@soundqueue/shared/queues';
import type { ApiContext } from '../context';
import { addFlowWithin } from '../enqueue';
import { HttpError } from '../http-errors';
import type { BookInput } from './book-input';

type Book = typeof books.$inferSelect;

async function enqueueRun(ctx: ApiContext, book: Book, spreadIndexes: number[]): Promise<void> {
  try {
    await addFlowWithin(ctx.flows, buildBookFlow(book.id, book.run, spreadIndexes, tuningFrom(ctx.config)), ctx.config.ENQUEUE_TIMEOUT_MS);
  } catch (error) {
    const message = `Could not enqueue the book's jobs: ${(error as Error).message}`;
    ctx.logger.error({ err: error, bookId: book.id }, 'enqueue failed');
    const entry: ProcessingError = { timestamp: new Date().toISOString(), spreadIndex: 0, pages: '1-2', errorType: 'DatabaseError', message, stack: null, attempt: 1 };
    // Processing cannot start: the book is marked failed so nothing waits for it forever.
    await ctx.db
      .update(books)
      .set({
        status: 'failed',
        completedAt: sql`now()`,
        errorCount: sql`${books.errorCount} + 1`,
        processingErrors: sql`${books.processingErrors} || ${JSON.stringify([entry])}::jsonb`,
      })
      .where(eq(books.id, book.id));
    throw new HttpError(503, 'queue_unavailable', `${message}. Try again.`, { bookId: book.id });
  }
}

/** Creates the book and its spreads in one transaction, then starts its flow. */
export async function createBook(ctx: ApiContext, userId: string, input: BookInput): Promise<Book> {
  const spreads = toSpreads(input.pages);
  const book = await ctx.db.transaction(async (tx) => {
    const [row] = await tx
      .insert(books)
      .values({
        userId,
        title: input.title,
        author: input.author,
        status: 'processing',
        pageCount: input.pages.length,
        spreadCount: spreads.length,
        startedAt: new Date(),
      })
      .returning();
    for (let i = 0; i < spreads.length; i += 500) {
      await tx.insert(bookSpreads).values(
        spreads.slice(i, i + 500).map((s) => ({ bookId: row!.id, index: s.index, firstPage: s.firstPage, lastPage: s.lastPage, text: s.text })),
      );
    }
    return row!;
  });
  await enqueueRun(ctx, book, spreads.map((s) => s.index));
  return book;
}

export async function getOwnedBook(ctx: ApiContext, userId: string, bookId: string): Promise<Book> {
  const [book] = await ctx.db.select().from(books).where(and(eq(books.id, bookId), eq(books.userId, userId)));
  if (!book) throw new HttpError(404, 'not_found', 'book not found');
  return book;
}

/**
 * Starts generation again for a finished book: spreads whose analysis failed are analysed
 * again, then scenes are re-segmented; finished soundscapes of unchanged scenes are kept.
 */
export async function restartBook(ctx: ApiContext, userId: string, bookId: string): Promise<Book> {
  const result = await ctx.db.transaction(async (tx) => {
    const [book] = await tx.select().from(books).where(and(eq(books.id, bookId), eq(books.userId, userId))).for('update');
    if (!book) throw new HttpError(404, 'not_found', 'book not found');
    if (book.status === 'processing' || book.status === 'pending') {
      throw new HttpError(409, 'book_processing', 'the book is already processing; wait for it to finish');
    }
    const retried = await tx
      .update(bookSpreads)
      .set({ status: 'pending', attempts: 0, errorMessage: null, updatedAt: sql`now()` })
      .where(and(eq(bookSpreads.bookId, bookId), eq(bookSpreads.status, 'failed')))
      .returning({ index: bookSpreads.index });
    const [updated] = await tx
      .update(books)
      .set({
        run: book.run + 1,
        status: 'processing',
        failedSpreads: 0,
        soundscapesFailed: 0,
        errorCount: 0,
        processingErrors: [],
        processingTimeSeconds: null,
        startedAt: sql`now()`,
        completedAt: null,
        updatedAt: sql`now()`,
      })
      .where(eq(books.id, bookId))
      .returning();
    return { book: updated!, spreadIndexes: retried.map((r) => r.index).sort((a, b) => a - b) };
  });
  await enqueueRun(ctx, result.book, result.spreadIndexes);
  return result.book;
}

