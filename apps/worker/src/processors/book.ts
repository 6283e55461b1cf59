import { WaitingChildrenError } from 'bullmq';
import { and, asc, eq, inArray, sql } from 'drizzle-orm';
import { spreadAnalysisSchema } from '@soundqueue/shared/analysis';
import { books, bookSpreads, scenes, soundscapes } from '@soundqueue/shared/db/schema';
import { jobId, jobOptions, parsePayload, QUEUE, tuningFrom } from '@soundqueue/shared/queues';
import { bookCountersEvent, failBookLeftovers, finaliseBook, lockBookChildren, lockBookRun, removeVoidedFiles, voidedClaimFile } from '@soundqueue/shared/rollup/books';
import { segmentScenes } from '@soundqueue/shared/scenes';
import type { WorkerContext } from '../context';
import type { JobRun } from '../job-failure';

const lost = (what: string) => `The ${what} job was lost before it finished (its worker stopped); start generation again to retry it.`;

/**
 * The book's root job, a step job that survives a crash at any step because every step is
 * idempotent and the database says what is done:
 * - `segment` (after every spread's analysis ended): group spreads into scenes, create one
 *   soundscape per new scene, add their jobs as this job's children, wait for them;
 * - `finalize` (after every soundscape ended): ready or failed, with the stats.
 */
export async function processBook(ctx: WorkerContext, run: JobRun): Promise<{ status: string | null }> {
  const data = parsePayload('book', run.job.data);
  // A root of an older run changes nothing: this read saves the work, and each step checks
  // the run again under the book row's lock (a restart takes it too).
  const [book] = await ctx.db.select().from(books).where(eq(books.id, data.bookId));
  if (!book || book.status !== 'processing' || book.run !== data.run) return { status: null };
  const attempt = run.job.attemptsMade + 1;

  if (data.step === 'segment') {
    const segmentStarted = Date.now();
    const failed = await failBookLeftovers(ctx.db, book.id, { run: data.run, spreads: { errorType: 'ContentAnalysisError', message: lost('analysis'), stack: null, attempt } });
    if (failed === null) return { status: null };
    await ctx.publish(failed);
    const [fresh] = await ctx.db.select().from(books).where(eq(books.id, book.id));
    if (fresh && fresh.processedSpreads > 0) {
      const analysisMs = segmentStarted - (book.startedAt ?? book.createdAt).getTime();
      const pending = await segment(ctx, book.id, data.run, { analysisMs, segmentStarted });
      if (pending === null) return { status: null };
      for (const soundscapeId of pending) {
        await ctx.queues.soundscape.add(
          'generate-soundscape',
          { bookId: book.id, soundscapeId, run: data.run },
          {
            ...jobOptions(QUEUE.soundscape, tuningFrom(ctx.config)),
            jobId: jobId.soundscape(soundscapeId, data.run),
            parent: { id: run.job.id!, queue: run.job.queueQualifiedName },
            ignoreDependencyOnFailure: true,
          },
        );
      }
    }
    await run.job.updateData({ ...data, step: 'finalize' });
    if (await run.job.moveToWaitingChildren(run.token!)) throw new WaitingChildrenError();
  }

  // finalize
  const soundscapesStarted = Number((await ctx.db.select({ t: books.stepTimings }).from(books).where(eq(books.id, book.id)))[0]?.t.analysisMs ?? 0);
  const totalMs = Date.now() - (book.startedAt ?? book.createdAt).getTime();
  const result = await finaliseBook(ctx.db, book.id, { soundscapesMs: Math.max(0, totalMs - soundscapesStarted), totalMs }, {
    run: data.run,
    soundscapes: { errorType: 'SoundscapeGenerationError', message: lost('soundscape'), stack: null, attempt },
  });
  await removeVoidedFiles(ctx.storage, ctx.logger, result.voidedFiles);
  await ctx.publish(result.events);
  return { status: result.status };
}

/**
 * Writes the book's scenes from its spreads' analyses and returns the soundscapes still to
 * generate. A scene identical to an existing one (same spreads, same prompt) keeps its
 * soundscape, so running generation again never redoes finished work. Null if the book is
 * no longer processing `run`.
 */
async function segment(ctx: WorkerContext, bookId: string, run: number, timing: { analysisMs: number; segmentStarted: number }): Promise<string[] | null> {
  const result = await ctx.db.transaction(async (tx) => {
    // Every soundscape of the book before the book's row (the lock order of rollup/books.ts):
    // the replaced scenes' soundscapes are deleted below, and the others' counts read.
    await lockBookChildren(tx, bookId, { soundscapes: 'all' });
    if (!(await lockBookRun(tx, bookId, run))) return null;
    const spreads = await tx.select().from(bookSpreads).where(eq(bookSpreads.bookId, bookId)).orderBy(asc(bookSpreads.index));
    const planned = segmentScenes(
      spreads.map((s) => ({
        index: s.index,
        firstPage: s.firstPage,
        lastPage: s.lastPage,
        analysis: s.status === 'analyzed' ? spreadAnalysisSchema.parse(s.analysis) : null,
      })),
    );
    const existing = await tx.select().from(scenes).where(eq(scenes.bookId, bookId));
    const keep = new Map<number, string>();
    for (const scene of planned) {
      const same = existing.find((e) => e.firstSpread === scene.firstSpread && e.lastSpread === scene.lastSpread && e.prompt === scene.prompt);
      if (same) keep.set(scene.index, same.id);
    }
    const stale = existing.filter((e) => ![...keep.values()].includes(e.id)).map((e) => e.id);
    // Their soundscapes' rows go with them (cascade); their files are removed once this commits.
    // Locked (above) before this read: a job of an earlier run still completing one of them
    // then waits, finds its row gone and removes its file itself (processors/soundscape.ts);
    // unlocked, it could record its file between this read and the delete, and the file would
    // be nobody's. Those without a file yet are locked too: those are the ones such a job may
    // be about to complete.
    // A claim the delete voids may have stored a file too (voidedClaimFile).
    const replaced = stale.length === 0 ? [] : await tx.select({ id: soundscapes.id, fileKey: soundscapes.fileKey, claim: soundscapes.claim }).from(soundscapes).where(inArray(soundscapes.sceneId, stale));
    const orphaned = replaced.flatMap((s) => [...(s.fileKey === null ? [] : [s.fileKey]), ...voidedClaimFile(bookId, s.id, s.claim)]);
    if (stale.length > 0) await tx.delete(scenes).where(inArray(scenes.id, stale));
    // Renumber kept scenes out of the way first: (book_id, index) is unique.
    for (const [index, id] of keep) await tx.update(scenes).set({ index: -1 - index }).where(eq(scenes.id, id));
    for (const [index, id] of keep) await tx.update(scenes).set({ index }).where(eq(scenes.id, id));
    const [owner] = await tx.select({ userId: books.userId }).from(books).where(eq(books.id, bookId));
    for (const scene of planned) {
      if (keep.has(scene.index)) continue;
      const [row] = await tx
        .insert(scenes)
        .values({
          bookId,
          index: scene.index,
          firstSpread: scene.firstSpread,
          lastSpread: scene.lastSpread,
          firstPage: scene.firstPage,
          lastPage: scene.lastPage,
          description: scene.description,
          mood: scene.mood,
          ambience: scene.ambience,
          prompt: scene.prompt,
        })
        .returning({ id: scenes.id });
      await tx.insert(soundscapes).values({ sceneId: row!.id, bookId, userId: owner!.userId });
    }
    // Soundscapes of kept scenes keep their status: one that failed in this run stays failed
    // with its error (restartBook gives failed ones another go, clearing the errors).
    const all = await tx.select({ id: soundscapes.id, status: soundscapes.status }).from(soundscapes).where(eq(soundscapes.bookId, bookId));
    const [book] = await tx
      .update(books)
      .set({
        scenesCreated: planned.length,
        soundscapesGenerated: all.filter((s) => s.status === 'completed').length,
        soundscapesFailed: all.filter((s) => s.status === 'failed').length,
        stepTimings: sql`${books.stepTimings} || ${JSON.stringify({ analysisMs: timing.analysisMs, segmentationMs: Date.now() - timing.segmentStarted })}::jsonb`,
        updatedAt: sql`now()`,
      })
      .where(eq(books.id, bookId))
      .returning();
    return { book: book!, pending: all.filter((s) => s.status === 'pending' || s.status === 'generating').map((s) => s.id), orphaned };
  });
  if (!result) return null;
  // A replaced scene's audio is no longer served (its row is gone): its file would only fill
  // storage. A file that cannot be removed now is logged; nothing depends on it.
  for (const fileKey of result.orphaned) {
    await ctx.storage.delete(fileKey).catch((error: unknown) => ctx.logger.warn({ err: error, fileKey }, 'could not remove a replaced scene\'s soundscape file'));
  }
  await ctx.publish([bookCountersEvent(result.book)]);
  return result.pending;
}

