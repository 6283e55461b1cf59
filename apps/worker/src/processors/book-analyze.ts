import { and, eq } from 'drizzle-orm';
import { books, bookSpreads } from '@soundqueue/shared/db/schema';
import { describeError } from '@soundqueue/shared/errors';
import { parsePayload } from '@soundqueue/shared/queues';
import { completeSpread, failSpread, startSpread } from '@soundqueue/shared/rollup/books';
import type { WorkerContext } from '../context';
import { handleJobFailure, type JobRun } from '../job-failure';
import { recordedCall } from '../provider-calls';

/** One spread's analysis: setting, mood, ambience and whether a new scene starts here. */
export async function processBookAnalyze(ctx: WorkerContext, run: JobRun): Promise<{ sceneChanged: boolean } | { skipped: string }> {
  const { bookId, spreadIndex, run: jobRun } = parsePayload('book-analyze', run.job.data);
  const [book] = await ctx.db.select({ userId: books.userId, status: books.status, run: books.run }).from(books).where(eq(books.id, bookId));
  if (!book) return { skipped: 'book no longer exists' };
  // A book that failed to start (its flow arrived after the API gave up) is not processed,
  // nor is a job of an earlier run (such a flow, arriving once Redis is back, during a
  // restart's run): the current run's own job analyses the spread.
  if (book.status !== 'processing') return { skipped: `book is ${book.status}` };
  if (book.run !== jobRun) return { skipped: `job of run ${jobRun}, the book is on run ${book.run}` };
  if (!(await startSpread(ctx.db, bookId, spreadIndex))) return { skipped: 'spread already analysed' };
  const [spread] = await ctx.db.select().from(bookSpreads).where(and(eq(bookSpreads.bookId, bookId), eq(bookSpreads.index, spreadIndex)));
  const [previous] =
    spreadIndex > 0
      ? await ctx.db.select({ text: bookSpreads.text }).from(bookSpreads).where(and(eq(bookSpreads.bookId, bookId), eq(bookSpreads.index, spreadIndex - 1)))
      : [];
  const provider = ctx.providers.analysis;
  const started = Date.now();
  try {
    const result = await recordedCall(
      ctx.db,
      { userId: book.userId, bookId, provider: provider.name, kind: 'analysis', unitType: 'tokens' },
      () => provider.analyze({ spreadIndex, text: spread!.text, previousText: previous?.text ?? null }),
      (r) => ({ units: r.usage.tokens, costUsd: r.costUsd }),
    );
    // Spread 0 opens scene 0 whatever the model says.
    const analysis = spreadIndex === 0 ? { ...result.analysis, sceneChanged: true } : result.analysis;
    await ctx.publish(await completeSpread(ctx.db, bookId, spreadIndex, { analysis, costUsd: result.costUsd, durationMs: Date.now() - started }));
    return { sceneChanged: analysis.sceneChanged };
  } catch (error) {
    return await handleJobFailure(run, error, async (final) => {
      const { errorType, message } = describeError(final, 'ContentAnalysisError');
      const events = await failSpread(ctx.db, bookId, spreadIndex, {
        errorType: errorType as 'ContentAnalysisError',
        message,
        stack: final instanceof Error ? (final.stack ?? null) : null,
        attempt: run.job.attemptsMade + 1,
      });
      await ctx.publish(events);
    });
  }
}
