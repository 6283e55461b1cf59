import { randomUUID } from 'node:crypto';
import { and, asc, eq, inArray, lt, or, sql } from 'drizzle-orm';
import type { Db, Tx } from '../db/client';
import { books, bookSpreads, scenes, soundscapes, type ProcessingError, type spreadStatuses, type soundscapeStatuses } from '../db/schema';
import type { ProgressEvent } from '../events';
import { outcomes } from '../metrics';
import type { Logger } from '../logger';
import { storageKeys, type Storage } from '../storage/types';
import { recordWebhooksIn } from '../webhooks';
import type { SpreadAnalysis } from '../analysis';

// State transitions of spreads, soundscapes and books; the same pattern as tracks: a
// conditional update of the child row, and the book's counters only when it hit a row.
//
// Lock order, as for tracks (rollup/tracks.ts): a spread's or soundscape's row, then its
// book's. A transaction that changes children under the book row's lock (a run's leftovers,
// segmentation, a restart, a refused enqueue) locks them first with lockBookChildren, spreads
// before soundscapes, each in id order, and takes the book's lock after them.

type Book = typeof books.$inferSelect;

export function bookCountersEvent(book: Book): ProgressEvent {
  return {
    subject: { kind: 'book', id: book.id },
    type: 'book.updated',
    data: {
      // The row's version (see rollup/tracks.ts): a reader ignores a lower one than it applied.
      version: book.version,
      status: book.status,
      totalSpreads: book.spreadCount,
      processedSpreads: book.processedSpreads,
      failedSpreads: book.failedSpreads,
      scenesCreated: book.scenesCreated,
      soundscapesGenerated: book.soundscapesGenerated,
      soundscapesFailed: book.soundscapesFailed,
      errorCount: book.errorCount,
    },
  };
}

async function appendError(tx: Tx, bookId: string, error: ProcessingError, counters: Record<string, unknown>): Promise<Book | undefined> {
  const [book] = await tx
    .update(books)
    .set({
      ...counters,
      errorCount: sql`${books.errorCount} + 1`,
      processingErrors: sql`${books.processingErrors} || ${JSON.stringify([error])}::jsonb`,
      updatedAt: sql`now()`,
    })
    .where(eq(books.id, bookId))
    .returning();
  return book;
}

/** A claim's row not renewed (updated_at) for a whole lease: its holder is presumed dead. */
const lapsed = (updatedAt: typeof bookSpreads.updatedAt | typeof soundscapes.updatedAt, leaseMs: number) =>
  lt(updatedAt, sql`now() - make_interval(secs => ${leaseMs / 1000})`);

// A spread's analysis is a paid call too, claimed like a soundscape (see claimSoundscape):
// `analyzing` is a claim its job renews, releases on a failed attempt, and another job takes
// over only once it has lapsed for a whole lease.
const spread = (bookId: string, index: number) => and(eq(bookSpreads.bookId, bookId), eq(bookSpreads.index, index));
/** The spread, while the job holding `claim` still holds it. */
const heldSpread = (bookId: string, index: number, claim: string) => and(spread(bookId, index), eq(bookSpreads.status, 'analyzing'), eq(bookSpreads.claim, claim));

/** What a claim attempt answers: this job's claim, 'busy' (another's live claim), the work's status, or 'superseded'. */
export type ClaimAnswer<Settled extends string, Taken = { claim: string }> = Taken | 'busy' | 'gone' | 'superseded' | Settled;

/** Thrown inside a claim's transaction to undo it: the book is no longer processing the job's run. */
class Superseded extends Error {}

/**
 * Takes a claim for a job of `run` in one transaction: `take` updates the child row (locking
 * it) and says whether it hit one; the book is then read, and the claim undone unless the
 * book is still processing that run ('superseded'). Read after the child's lock and not
 * before: a restart locks the children before the book, so either it committed before this
 * read, which then sees its new run, or it waits for this transaction, which commits only
 * while the book is processing this run, and then refuses (409: the book is processing).
 */
async function claimForRun(db: Db, bookId: string, run: number, take: (tx: Tx) => Promise<boolean>): Promise<boolean | 'superseded'> {
  try {
    return await db.transaction(async (tx) => {
      if (!(await take(tx))) return false;
      const [book] = await tx.select({ status: books.status, run: books.run }).from(books).where(eq(books.id, bookId));
      if (!book || book.status !== 'processing' || book.run !== run) throw new Superseded();
      return true;
    });
  } catch (error) {
    if (error instanceof Superseded) return 'superseded';
    throw error;
  }
}

/**
 * Claims the spread's analysis for this job of `run`; otherwise says why not: 'busy' (a live
 * claim), its status, or 'superseded' (the book is no longer processing `run`).
 */
export async function claimSpread(db: Db, bookId: string, index: number, run: number, leaseMs: number): Promise<ClaimAnswer<'analyzed' | 'failed'>> {
  const claim = randomUUID();
  const taken = await claimForRun(db, bookId, run, async (tx) => {
    const [row] = await tx
      .update(bookSpreads)
      .set({ status: 'analyzing', claim, attempts: sql`${bookSpreads.attempts} + 1`, updatedAt: sql`now()` })
      .where(
        and(
          spread(bookId, index),
          or(
            eq(bookSpreads.status, 'pending'),
            and(eq(bookSpreads.status, 'analyzing'), lapsed(bookSpreads.updatedAt, leaseMs)),
          ),
        ),
      )
      .returning({ id: bookSpreads.id });
    return row !== undefined;
  });
  if (taken === true) return { claim };
  if (taken === 'superseded') return 'superseded';
  const [current] = await db.select({ status: bookSpreads.status }).from(bookSpreads).where(spread(bookId, index));
  if (!current) return 'gone';
  return current.status === 'analyzing' || current.status === 'pending' ? 'busy' : current.status;
}

/** Whether this job's claim is still the spread's (no timeout ended its run, no other job took it over). */
export async function holdsSpreadClaim(db: Db, bookId: string, index: number, claim: string): Promise<boolean> {
  const [row] = await db.select({ id: bookSpreads.id }).from(bookSpreads).where(heldSpread(bookId, index, claim));
  return row !== undefined;
}

/** Keeps this job's claim alive while the provider works; false once the claim is no longer this job's. */
export async function renewSpreadClaim(db: Db, bookId: string, index: number, claim: string): Promise<boolean> {
  const renewed = await db.update(bookSpreads).set({ updatedAt: sql`now()` }).where(heldSpread(bookId, index, claim)).returning({ id: bookSpreads.id });
  return renewed.length > 0;
}

export async function releaseSpreadClaim(db: Db, bookId: string, index: number, claim: string): Promise<void> {
  await db.update(bookSpreads).set({ status: 'pending', claim: null, updatedAt: sql`now()` }).where(heldSpread(bookId, index, claim));
}

/** Records the analysis of the job holding `claim`; null (nothing changed) if it no longer holds it. */
export async function completeSpread(
  db: Db,
  bookId: string,
  index: number,
  claim: string,
  result: { analysis: SpreadAnalysis; costUsd: number; durationMs: number },
): Promise<ProgressEvent[] | null> {
  return db.transaction(async (tx) => {
    const [spread] = await tx
      .update(bookSpreads)
      // The claim stays: it tells the job whose completion threw after its COMMIT that it went through (completedSpreadEvents).
      .set({ status: 'analyzed', claim, analysis: result.analysis, errorMessage: null, costUsd: result.costUsd, durationMs: result.durationMs, updatedAt: sql`now()` })
      .where(heldSpread(bookId, index, claim))
      .returning();
    if (!spread) return null;
    const [book] = await tx
      .update(books)
      .set({
        processedSpreads: sql`${books.processedSpreads} + 1`,
        costUsd: sql`${books.costUsd} + ${result.costUsd}`,
        updatedAt: sql`now()`,
      })
      .where(eq(books.id, bookId))
      .returning();
    return spreadAnalyzedEvents(bookId, index, result.analysis, book);
  });
}

/** What a spread's completion announces: the spread, and its book's counters. */
function spreadAnalyzedEvents(bookId: string, index: number, analysis: unknown, book: Book | undefined): ProgressEvent[] {
  return [
    { subject: { kind: 'book', id: bookId }, type: 'spread.updated', data: { spreadIndex: index, status: 'analyzed', analysis } },
    ...(book ? [bookCountersEvent(book)] : []),
  ];
}

/**
 * The events of a spread's completion, made from its row and its book's as they are now: null
 * unless the spread was analysed under `claim`. For a completion that threw although it was
 * committed (its connection lost once the COMMIT was sent), whose own events never came back.
 */
export async function completedSpreadEvents(db: Db, bookId: string, index: number, claim: string): Promise<ProgressEvent[] | null> {
  const [row] = await db.select().from(bookSpreads).where(and(spread(bookId, index), eq(bookSpreads.status, 'analyzed'), eq(bookSpreads.claim, claim)));
  if (!row) return null;
  const [book] = await db.select().from(books).where(eq(books.id, bookId));
  return spreadAnalyzedEvents(bookId, index, row.analysis, book);
}

/** What a failed spread or soundscape records: the rest (time, spread, pages) comes from its row. */
export type FailureReason = Omit<ProcessingError, 'spreadIndex' | 'pages' | 'timestamp'>;

/** Records the final failure of the job holding `claim`; null (nothing changed) if it no longer holds it. */
export async function failSpread(db: Db, bookId: string, index: number, claim: string, error: FailureReason): Promise<ProgressEvent[] | null> {
  return db.transaction((tx) => failSpreadIn(tx, bookId, index, error, claim));
}

/** Without `claim`, a run's leftover (pending, or claimed by a job of that run) is failed. */
async function failSpreadIn(tx: Tx, bookId: string, index: number, error: FailureReason, claim?: string): Promise<ProgressEvent[] | null> {
  const [row] = await tx
    .update(bookSpreads)
    .set({ status: 'failed', claim: null, errorMessage: error.message, updatedAt: sql`now()` })
    .where(claim ? heldSpread(bookId, index, claim) : and(spread(bookId, index), inArray(bookSpreads.status, ['pending', 'analyzing'])))
    .returning();
  if (!row) return null;
  const entry: ProcessingError = {
    ...error,
    timestamp: new Date().toISOString(),
    spreadIndex: index,
    pages: `${row.firstPage}-${row.lastPage}`,
  };
  const book = await appendError(tx, bookId, entry, { failedSpreads: sql`${books.failedSpreads} + 1` });
  return [
    { subject: { kind: 'book', id: bookId }, type: 'spread.updated', data: { spreadIndex: index, status: 'failed', error: entry } },
    ...(book ? [bookCountersEvent(book)] : []),
  ];
}

// A soundscape is a paid provider call. `generating` is a claim on it: the job holding it
// renews it (updated_at) while it works, and releases it (back to `pending`) when an attempt
// fails and will be retried. Another job (the reconciler's new run after Redis lost the jobs,
// while the first job's worker lives on) takes over only a claim not renewed for a whole
// lease, the time after which BullMQ too presumes a silent job stalled; until then it waits
// rather than pay for the same soundscape twice. As the voice renditions' claims do.
//
// Each claim has its own id (the row's `claim`), and the holder's writes (renewal, release,
// its result or its final failure) apply only while the row still carries it. A run's end
// (its leftovers failed by its root or the reconciler's timeout) and a restart clear it, so a
// job whose provider call outlived its run changes nothing of the next run's: not the row,
// not the book's counters, and not the file (each claim stores its audio under its own key).
// Claims are taken only for the run the book is processing (claimForRun). The reconciler's
// new run after Redis lost the jobs clears nothing: the first job's live claim stands, and
// its result counts, while the new run's job waits for it.

/** The soundscape, while the job holding `claim` still holds it. */
const heldSoundscape = (soundscapeId: string, claim: string) => and(eq(soundscapes.id, soundscapeId), eq(soundscapes.status, 'generating'), eq(soundscapes.claim, claim));

/**
 * The file a voided soundscape claim may have stored (keys are per claim) and no row names: a
 * claim is voided only while its soundscape is not completed with it. Its holder may have
 * stored the file and then died, or not known whether its completion went through (its
 * connection lost mid-transaction, and the row unreadable then): nothing else would ever
 * remove it. Removing it is safe whenever it happens: a holder still alive records nothing
 * once its claim is gone, and removes what it stores after that itself.
 */
export const voidedClaimFile = (bookId: string, soundscapeId: string, claim: string | null): string[] =>
  claim === null ? [] : [storageKeys.soundscape(bookId, soundscapeId, claim)];

/**
 * Claims the soundscape for this job of `run`; otherwise says why not: 'busy' (a live
 * claim), its status, or 'superseded' (the book is no longer processing `run`). A claim taken
 * over from a lapsed one comes with that one's file (`voidedFiles`), for the caller to remove
 * once this has committed.
 */
export async function claimSoundscape(
  db: Db,
  bookId: string,
  soundscapeId: string,
  run: number,
  leaseMs: number,
): Promise<ClaimAnswer<'completed' | 'failed', { claim: string; voidedFiles: string[] }>> {
  const claim = randomUUID();
  let voidedFiles: string[] = [];
  const taken = await claimForRun(db, bookId, run, async (tx) => {
    // The claim being replaced, read under the row's lock: UPDATE … RETURNING gives the new one.
    const [before] = await tx.select({ claim: soundscapes.claim }).from(soundscapes).where(eq(soundscapes.id, soundscapeId)).for('update');
    const [row] = await tx
      .update(soundscapes)
      .set({ status: 'generating', claim, attempts: sql`${soundscapes.attempts} + 1`, updatedAt: sql`now()` })
      .where(
        and(
          eq(soundscapes.id, soundscapeId),
          or(
            eq(soundscapes.status, 'pending'),
            and(eq(soundscapes.status, 'generating'), lapsed(soundscapes.updatedAt, leaseMs)),
          ),
        ),
      )
      .returning({ id: soundscapes.id });
    voidedFiles = voidedClaimFile(bookId, soundscapeId, before?.claim ?? null);
    return row !== undefined;
  });
  if (taken === true) return { claim, voidedFiles };
  if (taken === 'superseded') return 'superseded';
  const [current] = await db.select({ status: soundscapes.status }).from(soundscapes).where(eq(soundscapes.id, soundscapeId));
  if (!current) return 'gone';
  return current.status === 'generating' || current.status === 'pending' ? 'busy' : current.status;
}

/** Whether this job's claim is still the soundscape's (no timeout ended its run, no other job took it over). */
export async function holdsSoundscapeClaim(db: Db, soundscapeId: string, claim: string): Promise<boolean> {
  const [row] = await db.select({ id: soundscapes.id }).from(soundscapes).where(heldSoundscape(soundscapeId, claim));
  return row !== undefined;
}

/** Keeps this job's claim alive while the provider works; false once the claim is no longer this job's. */
export async function renewSoundscapeClaim(db: Db, soundscapeId: string, claim: string): Promise<boolean> {
  const renewed = await db.update(soundscapes).set({ updatedAt: sql`now()` }).where(heldSoundscape(soundscapeId, claim)).returning({ id: soundscapes.id });
  return renewed.length > 0;
}

/** Gives the claim back after an attempt that will be retried (the retry, or another job, claims it again). */
export async function releaseSoundscapeClaim(db: Db, soundscapeId: string, claim: string): Promise<void> {
  await db.update(soundscapes).set({ status: 'pending', claim: null, updatedAt: sql`now()` }).where(heldSoundscape(soundscapeId, claim));
}

/** Records the soundscape of the job holding `claim`; null (nothing changed) if it no longer holds it. */
export async function completeSoundscape(
  db: Db,
  soundscapeId: string,
  claim: string,
  result: { fileKey: string; fileBytes: number; durationMs: number; costUsd: number; provider: string },
): Promise<ProgressEvent[] | null> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .update(soundscapes)
      .set({ status: 'completed', claim: null, ...result, errorMessage: null, completedAt: sql`now()`, updatedAt: sql`now()` })
      .where(heldSoundscape(soundscapeId, claim))
      .returning();
    if (!row) return null;
    const [book] = await tx
      .update(books)
      .set({
        soundscapesGenerated: sql`${books.soundscapesGenerated} + 1`,
        costUsd: sql`${books.costUsd} + ${result.costUsd}`,
        updatedAt: sql`now()`,
      })
      .where(eq(books.id, row.bookId))
      .returning();
    return soundscapeCompletedEvents(row, book);
  });
}

/** What a soundscape's completion announces: the soundscape, and its book's counters. */
function soundscapeCompletedEvents(row: typeof soundscapes.$inferSelect, book: Book | undefined): ProgressEvent[] {
  return [
    { subject: { kind: 'book', id: row.bookId }, type: 'soundscape.updated', data: { soundscapeId: row.id, sceneId: row.sceneId, status: 'completed', durationMs: row.durationMs } },
    ...(book ? [bookCountersEvent(book)] : []),
  ];
}

/**
 * The events of a soundscape's completion, made from its row and its book's as they are now:
 * null unless the soundscape is completed with `fileKey`, the file of the attempt that stored
 * it (keys are per claim). For a completion that threw although it was committed (its
 * connection lost once the COMMIT was sent), whose own events never came back.
 */
export async function completedSoundscapeEvents(db: Db, soundscapeId: string, fileKey: string): Promise<ProgressEvent[] | null> {
  const [row] = await db
    .select()
    .from(soundscapes)
    .where(and(eq(soundscapes.id, soundscapeId), eq(soundscapes.status, 'completed'), eq(soundscapes.fileKey, fileKey)));
  if (!row) return null;
  const [book] = await db.select().from(books).where(eq(books.id, row.bookId));
  return soundscapeCompletedEvents(row, book);
}

/** Records the final failure of the job holding `claim`; null (nothing changed) if it no longer holds it. */
export async function failSoundscape(db: Db, soundscapeId: string, claim: string, scene: SceneSpan, error: FailureReason): Promise<ProgressEvent[] | null> {
  return db.transaction((tx) => failSoundscapeIn(tx, soundscapeId, scene, error, claim));
}

type SceneSpan = { firstSpread: number; firstPage: number; lastPage: number };

/** Without `claim`, a run's leftover (pending, or claimed by a job of that run) is failed. */
async function failSoundscapeIn(tx: Tx, soundscapeId: string, scene: SceneSpan, error: FailureReason, claim?: string): Promise<ProgressEvent[] | null> {
  const [row] = await tx
    .update(soundscapes)
    .set({ status: 'failed', claim: null, errorMessage: error.message, updatedAt: sql`now()` })
    .where(claim ? heldSoundscape(soundscapeId, claim) : and(eq(soundscapes.id, soundscapeId), inArray(soundscapes.status, ['pending', 'generating'])))
    .returning();
  if (!row) return null;
  const entry: ProcessingError = {
    ...error,
    timestamp: new Date().toISOString(),
    spreadIndex: scene.firstSpread,
    pages: `${scene.firstPage}-${scene.lastPage}`,
  };
  const book = await appendError(tx, row.bookId, entry, { soundscapesFailed: sql`${books.soundscapesFailed} + 1` });
  return [
    { subject: { kind: 'book', id: row.bookId }, type: 'soundscape.updated', data: { soundscapeId, sceneId: row.sceneId, status: 'failed', error: entry } },
    ...(book ? [bookCountersEvent(book)] : []),
  ];
}

/**
 * The spreads and soundscapes a run left unfinished (their jobs lost, or the run stopped by
 * the reconciler), failed with a reason when that run moves on.
 */
export interface BookLeftovers {
  /** The run: if the book has moved on to a newer one (or ended), nothing changes. */
  run: number;
  spreads?: FailureReason;
  soundscapes?: FailureReason;
}

type SpreadStatus = (typeof spreadStatuses)[number];
type SoundscapeStatus = (typeof soundscapeStatuses)[number];

/**
 * Locks the book's spreads and soundscapes in the given statuses (all soundscapes with
 * 'all'), each kind in id order, for a transaction that changes them under the book row's
 * lock, which it must take after this (see "Lock order" above). A child a transition is
 * changing is waited for. The caller reads what it changes again once it holds the book's
 * lock: a segmentation may have added soundscapes in between.
 */
export async function lockBookChildren(
  tx: Tx,
  bookId: string,
  which: { spreads?: readonly SpreadStatus[]; spreadIndexes?: readonly number[]; soundscapes?: readonly SoundscapeStatus[] | 'all' },
): Promise<void> {
  if (which.spreads) {
    await tx
      .select({ id: bookSpreads.id })
      .from(bookSpreads)
      .where(
        and(
          eq(bookSpreads.bookId, bookId),
          inArray(bookSpreads.status, which.spreads),
          which.spreadIndexes ? inArray(bookSpreads.index, [...which.spreadIndexes]) : undefined,
        ),
      )
      .orderBy(asc(bookSpreads.id))
      .for('no key update');
  }
  if (which.soundscapes) {
    await tx
      .select({ id: soundscapes.id })
      .from(soundscapes)
      .where(and(eq(soundscapes.bookId, bookId), which.soundscapes === 'all' ? undefined : inArray(soundscapes.status, which.soundscapes)))
      .orderBy(asc(soundscapes.id))
      .for('update');
  }
}

/**
 * The book row, locked for this transaction, if it is still processing `run`. A restart
 * takes the same lock to start a new run, so a job of an older run that passed its own run
 * check before a restart cannot fail the new run's fresh work or end the book.
 */
export async function lockBookRun(tx: Tx, bookId: string, run: number | undefined): Promise<Book | null> {
  const [book] = await tx.select().from(books).where(eq(books.id, bookId)).for('update');
  if (!book || book.status !== 'processing') return null;
  return run === undefined || book.run === run ? book : null;
}

/** The run's unfinished children, locked before the book (see "Lock order" above). */
function lockLeftovers(tx: Tx, bookId: string, leftovers: BookLeftovers): Promise<void> {
  return lockBookChildren(tx, bookId, {
    ...(leftovers.spreads ? { spreads: ['pending', 'analyzing'] } : {}),
    ...(leftovers.soundscapes ? { soundscapes: ['pending', 'generating'] } : {}),
  });
}

/**
 * Under the book's lock, taken after lockLeftovers. Read again here rather than taken from
 * that lock: the reconciler's timeout can meet the root's segmentation, whose new soundscapes
 * then exist only once the book's lock is free, and they must be failed too. The files of the
 * soundscape claims this voids come back with the events (voidedClaimFile), to be removed once
 * this has committed.
 */
async function failLeftoversIn(tx: Tx, bookId: string, leftovers: BookLeftovers): Promise<{ events: ProgressEvent[]; voidedFiles: string[] }> {
  const events: ProgressEvent[] = [];
  const voidedFiles: string[] = [];
  if (leftovers.spreads) {
    const open = await tx
      .select({ index: bookSpreads.index })
      .from(bookSpreads)
      .where(and(eq(bookSpreads.bookId, bookId), inArray(bookSpreads.status, ['pending', 'analyzing'])));
    for (const { index } of open) events.push(...((await failSpreadIn(tx, bookId, index, leftovers.spreads)) ?? []));
  }
  if (leftovers.soundscapes) {
    const open = await tx
      .select({ id: soundscapes.id, claim: soundscapes.claim, scene: scenes })
      .from(soundscapes)
      .innerJoin(scenes, eq(scenes.id, soundscapes.sceneId))
      .where(and(eq(soundscapes.bookId, bookId), inArray(soundscapes.status, ['pending', 'generating'])));
    for (const { id, claim, scene } of open) {
      const failed = await failSoundscapeIn(tx, id, scene, leftovers.soundscapes);
      if (!failed) continue;
      events.push(...failed);
      voidedFiles.push(...voidedClaimFile(bookId, id, claim));
    }
  }
  return { events, voidedFiles };
}

/**
 * Fails a run's leftover spreads under the book row's lock; null if the book is no longer
 * processing that run. (Spreads only: a run's soundscapes are failed as it ends, by
 * finaliseBook, which also gives back the files of the claims that voids.)
 */
export async function failBookLeftovers(db: Db, bookId: string, leftovers: Omit<BookLeftovers, 'soundscapes'>): Promise<ProgressEvent[] | null> {
  return db.transaction(async (tx) => {
    await lockLeftovers(tx, bookId, leftovers);
    return (await lockBookRun(tx, bookId, leftovers.run)) ? (await failLeftoversIn(tx, bookId, leftovers)).events : null;
  });
}

/**
 * A book is ready if at least one spread was processed, failed if none (invariant 3). With
 * `leftovers`, the run's unfinished spreads and soundscapes are failed first, and nothing
 * happens if the book has moved on to another run; all of it under the book row's lock.
 * `voidedFiles`: what the failed soundscapes' claims may have stored, for the caller to
 * remove (removeVoidedFiles).
 */
export async function finaliseBook(
  db: Db,
  bookId: string,
  timings: Record<string, number>,
  leftovers?: BookLeftovers,
): Promise<{ status: string | null; events: ProgressEvent[]; voidedFiles: string[] }> {
  const result = await db.transaction(async (tx) => {
    if (leftovers) await lockLeftovers(tx, bookId, leftovers);
    const book = await lockBookRun(tx, bookId, leftovers?.run);
    if (!book) return { status: null, events: [], voidedFiles: [] };
    const { events, voidedFiles } = leftovers ? await failLeftoversIn(tx, bookId, leftovers) : { events: [], voidedFiles: [] };
    const status = book.processedSpreads > 0 ? 'ready' : 'failed';
    const [done] = await tx
      .update(books)
      .set({
        status,
        completedAt: sql`now()`,
        processingTimeSeconds: sql`extract(epoch from (now() - coalesce(${books.startedAt}, ${books.createdAt})))`,
        stepTimings: { ...book.stepTimings, ...timings },
        updatedAt: sql`now()`,
      })
      .where(eq(books.id, bookId))
      .returning();
    if (!done) return { status: null, events, voidedFiles };
    const terminal: ProgressEvent = { subject: { kind: 'book', id: bookId }, type: `book.${status}`, data: { ...bookCountersEvent(done).data, processingTimeSeconds: done.processingTimeSeconds }, terminal: true };
    // book.ready / book.failed's webhooks are committed with the status (see recordWebhooksIn).
    return { status, events: [...events, bookCountersEvent(done), ...(await recordWebhooksIn(tx, [terminal]))], voidedFiles };
  });
  // Counted once the end has committed, as a batch's is (see countEnd in rollup/tracks.ts).
  if (result.status) outcomes.inc({ kind: 'book', status: result.status });
  return result;
}

/**
 * Removes the files of voided soundscape claims (claimSoundscape, finaliseBook, a replaced
 * scene's), after the change that voided them committed. One that cannot be removed now is
 * logged with its key: nothing serves or depends on it.
 */
export async function removeVoidedFiles(storage: Pick<Storage, 'delete'>, logger: Pick<Logger, 'warn'>, keys: readonly string[]): Promise<void> {
  for (const fileKey of keys) {
    await storage.delete(fileKey).catch((error: unknown) => logger.warn({ err: error, fileKey }, 'could not remove the file of a voided soundscape claim'));
  }
}
