import { and, eq } from 'drizzle-orm';
import { books, bookSpreads } from '@soundqueue/shared/db/schema';
import { describeError } from '@soundqueue/shared/errors';
import { parsePayload } from '@soundqueue/shared/queues';
import type { ProgressEvent } from '@soundqueue/shared/events';
import { claimSpread, completeSpread, completedSpreadEvents, failSpread, holdsSpreadClaim, releaseSpreadClaim, renewSpreadClaim } from '@soundqueue/shared/rollup/books';
import { claimLeaseMs, keepClaim, waitForClaim } from '../claims';
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
  // Another job analysing it (an earlier run's, whose worker lives on) is waited for.
  const leaseMs = claimLeaseMs(ctx);
  const claimed = await waitForClaim(run, 'analysing this spread', leaseMs, () => claimSpread(ctx.db, bookId, spreadIndex, jobRun, leaseMs));
  if (claimed === 'superseded') return { skipped: `job of run ${jobRun}, which the book is no longer processing` };
  if (typeof claimed === 'string') return { skipped: claimed === 'gone' ? 'spread no longer exists' : `spread is ${claimed}` };
  const { claim } = claimed;
  // A claim taken from this job (the reconciler timed its run out and the book was started
  // again: the new run's job analyses the spread; or a lapsed claim taken over) leaves it
  // nothing to record or retry.
  const lostClaim = () => {
    ctx.logger.info({ bookId, spreadIndex, run: jobRun }, 'spread analysis job no longer holds its claim; ended without recording its result');
    return { skipped: `job of run ${jobRun} no longer holds the spread: its run was stopped, or another job took over its lapsed claim` };
  };
  const [spread] = await ctx.db.select().from(bookSpreads).where(and(eq(bookSpreads.bookId, bookId), eq(bookSpreads.index, spreadIndex)));
  const [previous] =
    spreadIndex > 0
      ? await ctx.db.select({ text: bookSpreads.text }).from(bookSpreads).where(and(eq(bookSpreads.bookId, bookId), eq(bookSpreads.index, spreadIndex - 1)))
      : [];
  const provider = ctx.providers.analysis;
  const started = Date.now();
  // Renewed while the job works; a claim found gone stops the provider call (keepClaim).
  const kept = keepClaim(leaseMs, () => renewSpreadClaim(ctx.db, bookId, spreadIndex, claim));
  try {
    const result = await recordedCall(
      ctx.db,
      { userId: book.userId, bookId, provider: provider.name, kind: 'analysis', unitType: 'tokens' },
      () => provider.analyze({ spreadIndex, text: spread!.text, previousText: previous?.text ?? null }, kept.lost),
      (r) => ({ units: r.usage.tokens, costUsd: r.costUsd }),
      kept.lost,
    );
    // Spread 0 opens scene 0 whatever the model says.
    const analysis = spreadIndex === 0 ? { ...result.analysis, sceneChanged: true } : result.analysis;
    let events: ProgressEvent[] | null;
    try {
      events = await completeSpread(ctx.db, bookId, spreadIndex, claim, { analysis, costUsd: result.costUsd, durationMs: Date.now() - started });
    } catch (error) {
      // Committed all the same (its connection lost once the COMMIT was sent): the job is done,
      // and what the completion would have published is published from the rows.
      const recorded = await completedSpreadEvents(ctx.db, bookId, spreadIndex, claim).catch(() => null);
      if (!recorded) throw error;
      ctx.logger.warn({ bookId, spreadIndex, run: jobRun, err: error }, 'a spread analysis completion failed but was recorded; the job completes');
      await ctx.publish(recorded);
      return { sceneChanged: analysis.sceneChanged };
    }
    if (events === null) return lostClaim();
    await ctx.publish(events);
    return { sceneChanged: analysis.sceneChanged };
  } catch (error) {
    kept.stop();
    if (!(await holdsSpreadClaim(ctx.db, bookId, spreadIndex, claim))) return lostClaim();
    try {
      return await handleJobFailure(run, error, async (final) => {
        const { errorType, message } = describeError(final, 'ContentAnalysisError');
        const events = await failSpread(ctx.db, bookId, spreadIndex, claim, {
          errorType: errorType as 'ContentAnalysisError',
          message,
          stack: final instanceof Error ? (final.stack ?? null) : null,
          attempt: run.job.attemptsMade + 1,
        });
        if (events) await ctx.publish(events);
      });
    } finally {
      // Whatever happens next (a retry, a 429 pause) this attempt no longer holds the spread.
      // Released after the final failure is recorded, not before: that write is conditional
      // on the claim too. (After it, nothing is left to release.)
      await releaseSpreadClaim(ctx.db, bookId, spreadIndex, claim);
    }
  } finally {
    kept.stop();
  }
}
