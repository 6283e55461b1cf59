import { and, eq, inArray, ne, sql } from 'drizzle-orm';
import { books, bookSpreads, soundscapes, type ProcessingError } from '@soundqueue/shared/db/schema';
import { buildBookFlow } from '@soundqueue/shared/flows/book';
import { toSpreads } from '@soundqueue/shared/pages';
import { tuningFrom } from '@soundqueue/shared/queues';
import { bookCountersEvent, finaliseBook, lockBookChildren, lockBookRun, removeVoidedFiles } from '@soundqueue/shared/rollup/books';
import type { ApiContext } from '../context';
import { addFlowWithin } from '../enqueue';
import { checkBudget } from '../budget';
import { HttpError } from '../http-errors';
import type { BookInput } from './book-input';

type Book = typeof books.$inferSelect;

async function enqueueRun(ctx: ApiContext, book: Book, spreadIndexes: number[]): Promise<void> {
  try {
    await addFlowWithin(ctx.flows, buildBookFlow(book.id, book.run, spreadIndexes, tuningFrom(ctx.config)), ctx.config.ENQUEUE_TIMEOUT_MS);
  } catch (error) {
    const message = `Could not enqueue the book's jobs: ${(error as Error).message}`;
    ctx.logger.error({ err: error, bookId: book.id }, 'enqueue failed');
    // The enqueue failure is recorded on the book itself, once, even when no spread was left to
    // fail (a restart of a book whose spreads are all analysed): the user asked for a run that
    // did not happen, and this says why. (finaliseBook's leftovers record only what they fail.)
    // QueueError, as for a batch: nothing was wrong with the book, the queue refused its jobs.
    const entry: ProcessingError = { timestamp: new Date().toISOString(), spreadIndex: 0, pages: '1-2', errorType: 'QueueError', message, stack: null, attempt: 1 };
    // Processing cannot start, so nothing may wait for it: the spreads this run was to analyse
    // fail with the reason, and the book ends by the usual rule (ready if spreads of an
    // earlier run were processed, failed if none), so a restart of a ready book that cannot
    // be enqueued leaves it ready. Starting generation again picks the spreads up.
    await ctx.db.transaction(async (tx) => {
      // The spreads before the book's row (the lock order of rollup/books.ts), and only while
      // the book is still on this run (as every change a run's failure makes).
      await lockBookChildren(tx, book.id, { spreads: ['pending', 'analyzing'], spreadIndexes });
      if (!(await lockBookRun(tx, book.id, book.run))) return;
      const failed = await tx
        .update(bookSpreads)
        .set({ status: 'failed', claim: null, errorMessage: message, updatedAt: sql`now()` })
        .where(and(eq(bookSpreads.bookId, book.id), inArray(bookSpreads.index, spreadIndexes), inArray(bookSpreads.status, ['pending', 'analyzing'])))
        .returning({ index: bookSpreads.index });
      await tx
        .update(books)
        .set({
          failedSpreads: sql`${books.failedSpreads} + ${failed.length}`,
          errorCount: sql`${books.errorCount} + 1`,
          processingErrors: sql`${books.processingErrors} || ${JSON.stringify([entry])}::jsonb`,
          updatedAt: sql`now()`,
        })
        .where(and(eq(books.id, book.id), eq(books.run, book.run)));
    });
    // Soundscapes a restart gave another go cannot be made either: they fail with the reason.
    const unmade = { errorType: 'QueueError' as const, message, stack: null, attempt: 1 };
    const { events, voidedFiles } = await finaliseBook(ctx.db, book.id, {}, { run: book.run, soundscapes: unmade });
    await removeVoidedFiles(ctx.storage, ctx.logger, voidedFiles);
    // Not awaited, as for a batch (batch-service.ts): the 503 does not wait on a stalled Redis.
    ctx.background.run(() => ctx.publish(events));
    // Repeating the POST would make another book: this one is started again by its own route.
    throw new HttpError(
      503,
      'queue_unavailable',
      `${message}. What this run was to do was recorded as failed; start it again with POST /v1/books/${book.id}/soundscapes once the queue is back.`,
      { bookId: book.id },
    );
  }
}

/** Creates the book and its spreads in one transaction, then starts its flow. */
export async function createBook(ctx: ApiContext, userId: string, input: BookInput): Promise<Book> {
  await checkBudget(ctx.db, ctx.config, userId);
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
 * Starts generation again for a finished book: every spread not analysed yet (failed, or
 * never queued because the first enqueue failed) is analysed, then scenes are re-segmented;
 * finished soundscapes of unchanged scenes are kept and failed ones get another go.
 */
export async function restartBook(ctx: ApiContext, userId: string, bookId: string): Promise<Book> {
  const result = await ctx.db.transaction(async (tx) => {
    // What the restart changes before the book's row (the lock order of rollup/books.ts): an
    // old run's job may still be finishing a spread or soundscape of a book that has ended.
    await lockBookChildren(tx, bookId, { spreads: ['pending', 'analyzing', 'failed'], soundscapes: ['failed'] });
    const [book] = await tx.select().from(books).where(and(eq(books.id, bookId), eq(books.userId, userId))).for('update');
    if (!book) throw new HttpError(404, 'not_found', 'book not found');
    if (book.status === 'processing' || book.status === 'pending') {
      throw new HttpError(409, 'book_processing', 'the book is already processing; wait for it to finish');
    }
    await checkBudget(tx, ctx.config, userId);
    // A claim an old run's job may still hold goes with its status (rollup/books.ts): that job
    // records nothing now.
    const retried = await tx
      .update(bookSpreads)
      .set({ status: 'pending', claim: null, attempts: 0, errorMessage: null, updatedAt: sql`now()` })
      .where(and(eq(bookSpreads.bookId, bookId), ne(bookSpreads.status, 'analyzed')))
      .returning({ index: bookSpreads.index });
    // Here, with the book's errors cleared below, and not when the new run segments: a
    // segment step that runs twice in one run (a re-delivered root, the reconciler's new run
    // after Redis lost the jobs) would otherwise retry soundscapes that failed in this run,
    // leaving their errors counted after they succeed.
    await tx
      .update(soundscapes)
      .set({ status: 'pending', errorMessage: null, attempts: 0, updatedAt: sql`now()` })
      .where(and(eq(soundscapes.bookId, bookId), eq(soundscapes.status, 'failed')));
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
  // The book is processing again with its counters reset: a change like any other, so a client
  // following the book sees it now; and the first of the new run, so its event log, on its
  // short expiry since the end, is kept open again.
  const restarted = bookCountersEvent(result.book);
  await ctx.publish([{ ...restarted, data: { ...restarted.data, run: result.book.run }, reopens: true }]);
  await enqueueRun(ctx, result.book, result.spreadIndexes);
  return result.book;
}

