import { and, asc, eq, inArray, isNotNull, sql, type Placeholder } from 'drizzle-orm';
import type { Db, Tx } from '../db/client';
import { preparedFor } from '../db/prepared';
import { audioGenerationBatches, audioTracks, voiceRenditions, type BatchStatus, type SectionRequest } from '../db/schema';
import type { ProgressEvent } from '../events';
import { outcomes } from '../metrics';
import { recordWebhooksIn } from '../webhooks';

// State transitions of tracks and batches. Each transition is one statement: a conditional
// update of the track row (so a repeated or duplicated job changes nothing the second time)
// and, in a data-modifying CTE of the same statement, only when that update hit a row, the
// batch counters. One statement is as atomic as a transaction and costs one round trip;
// the hot ones are prepared once per database handle (db/prepared.ts). This is how
// invariants 1 and 2 of DESIGN.md hold under retries, stalls and duplicate deliveries. (A
// track's failure runs its statement in a transaction that also records its track.failed
// webhook deliveries; see finishTrack.)
//
// Lock order: a track's row, then its batch's. Every transition takes them in that order (the
// track update, then the counters in the same statement), so a transaction that changes
// unfinished tracks under the batch row's lock (finaliseBatch's leftovers) locks those tracks
// first, in id order, and the batch after them. The other way round it and a transition could
// each hold the row the other waits for: a deadlock, which PostgreSQL ends after a second by
// aborting one of them, perhaps a mix that had just finished. (A retry changes only failed
// tracks, which no transition touches. A cancel takes the batch first, to decide, and then
// never waits for a track: it skips the pending tracks a transition holds; see cancelBatch.)

const NOT_TERMINAL = ['pending', 'generating', 'mixing'] as const;

type TrackRow = typeof audioTracks.$inferSelect;
type BatchRow = typeof audioGenerationBatches.$inferSelect;

// Every event built from a row carries the row's version (raised by a trigger on each
// update): events are published after their commit, so two workers can publish in the other
// order than they committed, and a reader keeps the highest version it has applied.
export function trackEvent(track: TrackRow): ProgressEvent {
  return {
    subject: { kind: 'batch', id: track.batchId },
    type: 'track.updated',
    data: {
      trackId: track.id,
      version: track.version,
      sectionKey: track.sectionKey,
      variantId: track.variantId,
      status: track.status,
      mixStatus: track.mixStatus,
      durationMs: track.durationMs,
      errorType: track.errorType,
      errorMessage: track.errorMessage,
    },
  };
}

/**
 * What a batch's counters event carries: the columns the hot statements return for the batch
 * they update, and no more (the batch row also holds every section's text, up to 20,000
 * characters each, which each track's transition would otherwise fetch and parse again).
 */
const batchCounters = {
  id: audioGenerationBatches.id,
  version: audioGenerationBatches.version,
  status: audioGenerationBatches.status,
  tracksCompleted: audioGenerationBatches.tracksCompleted,
  tracksFailed: audioGenerationBatches.tracksFailed,
  tracksCancelled: audioGenerationBatches.tracksCancelled,
  tracksPending: audioGenerationBatches.tracksPending,
  totalTracksExpected: audioGenerationBatches.totalTracksExpected,
};
type BatchCounters = Pick<BatchRow, keyof typeof batchCounters>;

export function batchCountersEvent(batch: BatchCounters): ProgressEvent {
  return {
    subject: { kind: 'batch', id: batch.id },
    type: 'batch.updated',
    data: {
      version: batch.version,
      status: batch.status,
      tracksCompleted: batch.tracksCompleted,
      tracksFailed: batch.tracksFailed,
      tracksCancelled: batch.tracksCancelled,
      tracksPending: batch.tracksPending,
      totalTracksExpected: batch.totalTracksExpected,
    },
  };
}

const param = (name: string) => sql`${sql.placeholder(name)}`;
/** `column = any($name)`: one prepared statement for any list of allowed statuses. */
const statusIn = (name: string) => sql`${audioTracks.status} = any(${sql.placeholder(name)}::text[])`;

/**
 * The run guard of the transitions a job makes: the track's batch is still on the job's run
 * (`$run`). A retry, or the reconciler, starts a new run of the same tracks while jobs of the
 * run before may still be in Redis (an enqueue the API gave up on that landed after all, a
 * root lost with its children alive); such a job must change nothing, or it voices and mixes
 * a track the new run's jobs are voicing and mixing too, and its failure fails the new run's
 * track. Part of each transition's own conditional update (a primary-key probe of the batch
 * row, no extra round trip). `$run` null checks nothing: a job queued before payloads carried
 * the run, which is taken for the current run, and callers that are not a run's jobs.
 */
const ofRun = (run: Placeholder | number | null) =>
  sql`(${run}::integer is null or exists (select 1 from ${audioGenerationBatches} where ${audioGenerationBatches.id} = ${audioTracks.batchId} and ${audioGenerationBatches.run} = ${run}::integer))`;
/** The guard in a prepared statement, whose `run` is runValue's. */
const ofRunParam = ofRun(sql.placeholder('run'));
const runValue = (run: number | undefined) => run ?? null;

/** What the speech step needs of a track's batch: its own section, not every section's text. */
export interface SpeechRequest {
  batchId: string;
  userId: string;
  voiceId: string;
  model: string;
  /** The track's section of the request; null if the batch has no such section. */
  section: SectionRequest | null;
}

/**
 * pending → generating, and the batch pending → processing on its first started track, in
 * one statement (data-modifying CTEs run in one snapshot, atomically, in one round trip; the
 * batch is updated only if the track was). Returns the started track and the request fields
 * the speech step needs, with only this track's section: a batch's request holds every
 * section's text (up to 20,000 characters), which each of its tracks would otherwise fetch
 * and parse.
 */
export async function startTrack(
  db: Db,
  trackId: string,
  run?: number,
): Promise<{ started: false; events: [] } | { started: true; track: TrackRow; request: SpeechRequest; events: ProgressEvent[] }> {
  const statement = preparedFor(db, 'sq_start_track', (db) => {
    const t = db.$with('t').as(
      db
        .update(audioTracks)
        .set({ status: 'generating', startedAt: sql`coalesce(${audioTracks.startedAt}, now())`, attempts: sql`${audioTracks.attempts} + 1`, updatedAt: sql`now()` })
        .where(and(eq(audioTracks.id, param('trackId')), inArray(audioTracks.status, ['pending', 'generating']), ofRunParam))
        .returning(),
    );
    const b = db.$with('b').as(
      db
        .update(audioGenerationBatches)
        .set({ status: 'processing', startedAt: sql`coalesce(${audioGenerationBatches.startedAt}, now())`, updatedAt: sql`now()` })
        .where(and(inArray(audioGenerationBatches.id, db.select({ id: t.batchId }).from(t)), eq(audioGenerationBatches.status, 'pending')))
        .returning(batchCounters),
    );
    return db
      .with(t, b)
      .select({
        t: t._.selectedFields,
        request: {
          batchId: audioGenerationBatches.id,
          userId: audioGenerationBatches.userId,
          voiceId: audioGenerationBatches.voiceId,
          model: audioGenerationBatches.model,
          section: sql<SectionRequest | null>`${audioGenerationBatches.sectionsRequested} -> ${t.sectionIndex}`,
        },
        b: b._.selectedFields,
      })
      .from(t)
      .innerJoin(audioGenerationBatches, eq(audioGenerationBatches.id, t.batchId))
      .leftJoin(b, eq(b.id, t.batchId))
      .prepare('sq_start_track');
  });
  const [row] = await statement.execute({ trackId, run: runValue(run) });
  if (!row) return { started: false, events: [] };
  const events = [trackEvent(row.t)];
  if (row.b) events.push(batchCountersEvent(row.b));
  return { started: true, track: row.t, request: row.request, events };
}

/**
 * Records the voice rendition a track uses (and the cost, when this track paid for it).
 * Returns whether it did: not for a track that ended meanwhile (failed by its run's
 * finalisation) or whose batch has moved on from the job's run.
 */
export async function attachRendition(
  db: Db,
  trackId: string,
  rendition: { keyHash: string; storageKey: string; costUsd: number },
  run?: number,
): Promise<boolean> {
  const attach = (db: Db) =>
    db
      .update(audioTracks)
      .set({
        renditionKey: param('keyHash'),
        voiceFileKey: param('storageKey'),
        costUsd: sql`${audioTracks.costUsd} + ${sql.placeholder('costUsd')}::numeric`,
        updatedAt: sql`now()`,
      })
      .where(and(eq(audioTracks.id, param('trackId')), inArray(audioTracks.status, NOT_TERMINAL), ofRunParam));
  const values = { trackId, keyHash: rendition.keyHash, storageKey: rendition.storageKey, costUsd: rendition.costUsd, run: runValue(run) };
  if (rendition.costUsd <= 0) {
    const statement = preparedFor(db, 'sq_attach_rendition', (db) => attach(db).returning({ id: audioTracks.id }).prepare('sq_attach_rendition'));
    return (await statement.execute(values)).length > 0;
  }
  // The batch's cost grows only if the track row was updated, in the same statement.
  const paying = preparedFor(db, 'sq_attach_paid_rendition', (db) => {
    const t = db.$with('t').as(attach(db).returning({ batchId: audioTracks.batchId }));
    return db
      .with(t)
      .update(audioGenerationBatches)
      .set({ costUsd: sql`${audioGenerationBatches.costUsd} + ${sql.placeholder('costUsd')}::numeric`, updatedAt: sql`now()` })
      .where(inArray(audioGenerationBatches.id, db.select({ id: t.batchId }).from(t)))
      .returning({ id: audioGenerationBatches.id })
      .prepare('sq_attach_paid_rendition');
  });
  return (await paying.execute(values)).length > 0;
}

/**
 * generating → mixing, for a track whose voice is attached, returning the track and its
 * rendition in the same round trip. Null when the track is not (or no longer) waiting to be
 * mixed, or has no voice: the caller reads the track to say why.
 */
export async function markMixing(
  db: Db,
  trackId: string,
  run?: number,
): Promise<{ track: TrackRow; rendition: typeof voiceRenditions.$inferSelect | null; events: ProgressEvent[] } | null> {
  const statement = preparedFor(db, 'sq_mark_mixing', (db) => {
    const t = db.$with('t').as(
      db
        .update(audioTracks)
        .set({ status: 'mixing', mixStatus: 'mixing', updatedAt: sql`now()` })
        .where(and(eq(audioTracks.id, param('trackId')), inArray(audioTracks.status, ['generating', 'mixing']), isNotNull(audioTracks.renditionKey), ofRunParam))
        .returning(),
    );
    return db.with(t).select().from(t).leftJoin(voiceRenditions, eq(voiceRenditions.keyHash, t.renditionKey)).prepare('sq_mark_mixing');
  });
  const [row] = await statement.execute({ trackId, run: runValue(run) });
  return row ? { track: row.t, rendition: row.voice_renditions, events: [trackEvent(row.t)] } : null;
}

/**
 * mixing → generating without a voice, for a track whose rendition turned out to have no
 * stored file: the state the speech step (startTrack, then attachRendition) starts from, so
 * the track is voiced again. Only while the track still points at that rendition; counters
 * do not move (a track is pending until it is terminal).
 */
export async function detachRendition(db: Db, trackId: string, keyHash: string, run?: number): Promise<{ changed: boolean; events: ProgressEvent[] }> {
  const [row] = await db
    .update(audioTracks)
    .set({ status: 'generating', mixStatus: 'pending', renditionKey: null, voiceFileKey: null, updatedAt: sql`now()` })
    .where(and(eq(audioTracks.id, trackId), inArray(audioTracks.status, ['generating', 'mixing']), eq(audioTracks.renditionKey, keyHash), ofRun(runValue(run))))
    .returning();
  return row ? { changed: true, events: [trackEvent(row)] } : { changed: false, events: [] };
}

/** A track's status and voice, with its batch's current run: what a job reads when a transition changed nothing. */
export async function trackWithRun(db: Db, trackId: string): Promise<{ status: string; renditionKey: string | null; batchRun: number } | undefined> {
  const [row] = await db
    .select({ status: audioTracks.status, renditionKey: audioTracks.renditionKey, batchRun: audioGenerationBatches.run })
    .from(audioTracks)
    .innerJoin(audioGenerationBatches, eq(audioGenerationBatches.id, audioTracks.batchId))
    .where(eq(audioTracks.id, trackId));
  return row;
}

/**
 * Why a job's transition of a track changed nothing (the transitions say only that): the track
 * is gone, the batch has moved on from the job's run, or the track is not in a state the
 * transition starts from.
 */
export function whyUnchanged(track: { status: string; batchRun: number } | undefined, run: number | undefined): string {
  if (!track) return 'track no longer exists';
  if (run !== undefined && run !== track.batchRun) return `run ${run} is no longer the batch's run (${track.batchRun})`;
  return `track is ${track.status}`;
}

/** whyUnchanged, read from the database; only when a transition did not happen. */
export async function unchangedBecause(db: Db, trackId: string, run?: number): Promise<string> {
  return whyUnchanged(await trackWithRun(db, trackId), run);
}

type Terminal =
  | { status: 'completed'; mixedFileKey: string; mixedBytes: number; durationMs: number }
  | { status: 'failed'; errorType: string; errorMessage: string }
  | { status: 'cancelled' };

/** The columns a terminal status writes, and the batch counter it moves. */
function terminalChange(status: Terminal['status']) {
  switch (status) {
    case 'completed':
      return {
        set: { status, mixStatus: 'completed', mixedFileKey: param('mixedFileKey'), mixedBytes: sql`${sql.placeholder('mixedBytes')}::integer`, durationMs: sql`${sql.placeholder('durationMs')}::integer`, errorType: null, errorMessage: null },
        counter: { tracksCompleted: sql`${audioGenerationBatches.tracksCompleted} + 1` },
      };
    case 'failed':
      return {
        set: { status, mixStatus: sql`case when ${audioTracks.mixStatus} = 'mixing' then 'failed' else 'skipped' end`, errorType: param('errorType'), errorMessage: param('errorMessage') },
        counter: { tracksFailed: sql`${audioGenerationBatches.tracksFailed} + 1` },
      };
    case 'cancelled':
      return { set: { status, mixStatus: 'skipped' }, counter: { tracksCancelled: sql`${audioGenerationBatches.tracksCancelled} + 1` } };
  }
}

/**
 * Moves a track to a terminal status once. Returns whether this call did it; a second call
 * for the same track (a retried or duplicated job) finds no row to update and counts nothing,
 * nor does a job of a run the batch has moved on from (`run`, see ofRun).
 * A failure's track.failed webhooks are recorded in the same transaction (see
 * recordWebhooksIn): recorded after the commit, they were lost when the worker stopped in
 * between, and nothing fails the track again. Only failures pay for the transaction; the
 * other outcomes stay one statement.
 */
export async function finishTrack(
  db: Db,
  trackId: string,
  outcome: Terminal,
  { allowedFrom = NOT_TERMINAL, run }: { allowedFrom?: readonly string[]; run?: number } = {},
): Promise<{ changed: boolean; events: ProgressEvent[] }> {
  if (outcome.status !== 'failed') return moveToTerminal(db, trackId, outcome, allowedFrom, run);
  return db.transaction(async (tx) => {
    // The transaction handle has the same query API as Db (the statement is prepared per
    // handle, so built again here; failures are rare).
    const done = await moveToTerminal(tx as unknown as Db, trackId, outcome, allowedFrom, run);
    return { ...done, events: await recordWebhooksIn(tx, done.events) };
  });
}

/** finishTrack's one statement: the guarded track update and, only if it hit a row, the batch counters. */
async function moveToTerminal(
  db: Db,
  trackId: string,
  outcome: Terminal,
  allowedFrom: readonly string[],
  run: number | undefined,
): Promise<{ changed: boolean; events: ProgressEvent[] }> {
  const name = `sq_finish_track_${outcome.status}`;
  const statement = preparedFor(db, name, (db) => {
    const change = terminalChange(outcome.status);
    const t = db.$with('t').as(
      db
        .update(audioTracks)
        .set({ ...change.set, completedAt: sql`now()`, updatedAt: sql`now()` } as never)
        .where(and(eq(audioTracks.id, param('trackId')), statusIn('allowedFrom'), ofRunParam))
        .returning(),
    );
    const b = db.$with('b').as(
      db
        .update(audioGenerationBatches)
        .set({ ...change.counter, tracksPending: sql`${audioGenerationBatches.tracksPending} - 1`, updatedAt: sql`now()` })
        .where(inArray(audioGenerationBatches.id, db.select({ id: t.batchId }).from(t)))
        .returning(batchCounters),
    );
    return db.with(t, b).select().from(t).leftJoin(b, eq(b.id, t.batchId)).prepare(name);
  });
  const { status: _status, ...values } = outcome;
  const [row] = await statement.execute({ ...values, trackId, allowedFrom: [...allowedFrom], run: runValue(run) });
  if (!row) return { changed: false, events: [] };
  const events = [trackEvent(row.t)];
  if (row.b) events.push(batchCountersEvent(row.b));
  if (outcome.status === 'failed') {
    events.push({ subject: { kind: 'batch', id: row.t.batchId }, type: 'track.failed', data: trackEvent(row.t).data });
  }
  return { changed: true, events };
}

/** The terminal status a batch's counts call for (DESIGN.md invariant 3). */
export function terminalStatusFor(counts: {
  tracksCompleted: number;
  tracksFailed: number;
  tracksCancelled: number;
  totalTracksExpected: number;
}): BatchStatus {
  // A batch with cancelled tracks ends `cancelled`, whatever the tracks that ran did: the
  // user asked for it to stop, and its counters still say what finished.
  if (counts.tracksCancelled > 0) return 'cancelled';
  if (counts.tracksCompleted === counts.totalTracksExpected) return 'completed';
  if (counts.tracksCompleted === 0) return 'failed';
  return 'partial_success';
}

function summariseFailures(rows: { errorType: string | null; errorMessage: string | null }[], total: number): string | null {
  if (rows.length === 0) return null;
  const byMessage = new Map<string, number>();
  for (const row of rows) {
    const key = `${row.errorType ?? 'Error'}: ${row.errorMessage ?? 'unknown error'}`;
    byMessage.set(key, (byMessage.get(key) ?? 0) + 1);
  }
  const top = [...byMessage.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3);
  const parts = top.map(([message, count]) => (count > 1 ? `${message} (${count} tracks)` : message));
  const more = byMessage.size > top.length ? `; and ${byMessage.size - top.length} other error(s)` : '';
  return `${rows.length} of ${total} tracks failed. ${parts.join('; ')}${more}`;
}

/**
 * Locks the batch's unfinished tracks, in id order, for finaliseBatch, which takes the batch
 * row's lock after this (see "Lock order" above). Returns their ids. A track a transition is
 * changing is waited for and then judged by its new status.
 *
 * Only while the batch is on `run`: a finaliser of a run the batch has moved on from (a late
 * root, the reconciler's stuck pass with the run it read before a retry) finds out only once
 * it holds the batch row, and meanwhile it held the new run's pending tracks, which a cancel
 * then skipped (SKIP LOCKED, see cancelBatch) and so never cancelled. A retry changes the run
 * and the tracks in one commit, so this statement's snapshot sees both or neither.
 */
async function lockOpenTracks(tx: Tx, batchId: string, run: number): Promise<string[]> {
  const rows = await tx
    .select({ id: audioTracks.id })
    .from(audioTracks)
    .where(and(eq(audioTracks.batchId, batchId), inArray(audioTracks.status, NOT_TERMINAL), ofRun(run)))
    .orderBy(asc(audioTracks.id))
    .for('no key update');
  return rows.map((r) => r.id);
}

/** Tracks a run left unfinished, failed when that run is finalised: by its root job once
 * every job of the run has ended (a job lost past the stall limit or removed), by the
 * reconciler when the run is stuck, by the API when the run could not be enqueued. */
export interface Leftovers {
  /** The run being finalised: if the batch has moved on to a newer run, nothing changes. */
  run: number;
  errorType: string;
  reason: (trackId: string) => string;
  /** The batch's error_message if this finalises it, instead of the summary of its failed
   * tracks (an enqueue the API could not make has one reason for all of them). */
  errorMessage?: string;
}

/**
 * Gives the batch its terminal status, exactly once, when no track is left pending. With
 * `leftovers`, the run's unfinished tracks are failed first. Without (cancel) running tracks
 * are left to finish. Everything happens under the batch row's lock, which a retry takes too:
 * the run is checked under it, so a root of an older run that was past its own run check
 * when a cancel and a retry came in cannot fail the retry's fresh tracks or end the batch.
 */
export async function finaliseBatch(
  db: Db,
  batchId: string,
  leftovers?: Leftovers,
): Promise<{ status: BatchStatus | null; events: ProgressEvent[] }> {
  const result = await db.transaction(async (tx) => {
    const result = await finaliseIn(tx, batchId, leftovers);
    // Committed with the change they announce (the terminal event's, the leftovers'
    // track.failed): see recordWebhooksIn.
    return { ...result, events: await recordWebhooksIn(tx, result.events) };
  });
  countEnd(result.status);
  return result;
}

/**
 * Counts a batch's end once it has committed: counted inside the transaction, an end rolled
 * back after it (its webhook deliveries refused, its COMMIT lost) was counted, and counted
 * again by the retry that did end the batch.
 */
function countEnd(status: BatchStatus | null): void {
  if (status) outcomes.inc({ kind: 'batch', status });
}

/**
 * A user's cancel, decided under the batch row's lock, so that the answer follows the state
 * the batch is in when it is decided: `finished` for a batch that has ended (its root ended it
 * while the cancel was on its way: nothing is changed), else its pending tracks are cancelled
 * and, with nothing left running, the batch ends now (running tracks finish, and its root ends
 * it). A retry takes the same lock, so a cancel and a retry of the same batch happen one after
 * the other, whichever came first.
 *
 * The batch is locked before its tracks, the other way round from the transitions (see "Lock
 * order" above), so this never waits for a track: a pending track another transaction holds
 * (a job starting it, which waits for the batch to count it as started; a root failing it as
 * left over) is skipped (SKIP LOCKED), that transaction having it already, and the two never
 * wait for each other.
 */
export async function cancelBatch(
  db: Db,
  batchId: string,
  userId: string,
): Promise<{ outcome: 'not_found' } | { outcome: 'finished'; status: BatchStatus } | { outcome: 'cancelling'; events: ProgressEvent[]; ended: BatchStatus | null }> {
  const result = await db.transaction(async (tx) => {
    const [batch] = await tx
      .select({ status: audioGenerationBatches.status })
      .from(audioGenerationBatches)
      .where(and(eq(audioGenerationBatches.id, batchId), eq(audioGenerationBatches.userId, userId)))
      .for('update');
    if (!batch) return { outcome: 'not_found' as const };
    if (!['pending', 'processing'].includes(batch.status)) return { outcome: 'finished' as const, status: batch.status };
    await tx
      .update(audioGenerationBatches)
      .set({ cancelRequestedAt: sql`coalesce(${audioGenerationBatches.cancelRequestedAt}, now())`, updatedAt: sql`now()` })
      .where(eq(audioGenerationBatches.id, batchId));
    const pending = await tx
      .select({ id: audioTracks.id })
      .from(audioTracks)
      .where(and(eq(audioTracks.batchId, batchId), eq(audioTracks.status, 'pending')))
      .orderBy(asc(audioTracks.id))
      .for('no key update', { skipLocked: true });
    const events: ProgressEvent[] = [];
    for (const { id } of pending) {
      // The transaction handle has the same query API as Db (see finaliseIn).
      const r = await finishTrack(tx as unknown as Db, id, { status: 'cancelled' }, { allowedFrom: ['pending'] });
      events.push(...r.events);
    }
    // With nothing left running the batch is final now; otherwise its root job finalises it.
    const final = await finaliseIn(tx, batchId, undefined);
    return { outcome: 'cancelling' as const, events: [...events, ...(await recordWebhooksIn(tx, final.events))], ended: final.status };
  });
  if (result.outcome === 'cancelling') countEnd(result.ended);
  return result;
}

/**
 * The batch's status and run, and every file key its track rows name, read in one statement
 * (one snapshot), for removeUnnamedTrackFiles: null for a batch that is gone.
 */
export async function namedTrackFiles(
  db: Db,
  batchId: string,
): Promise<{ status: BatchStatus; run: number; tracksCompleted: number; keys: string[] } | null> {
  const [row] = await db
    .select({
      status: audioGenerationBatches.status,
      run: audioGenerationBatches.run,
      tracksCompleted: audioGenerationBatches.tracksCompleted,
      // By the batch id, not correlated: drizzle writes a one-table select's columns without
      // their table, so `batch_id = id` would compare two columns of audio_tracks.
      keys: sql<string[]>`array(select ${audioTracks.mixedFileKey} from ${audioTracks} where ${audioTracks.batchId} = ${batchId} and ${audioTracks.mixedFileKey} is not null)`,
    })
    .from(audioGenerationBatches)
    .where(eq(audioGenerationBatches.id, batchId));
  return row ?? null;
}

/** finaliseBatch's work, in its transaction. */
async function finaliseIn(tx: Tx, batchId: string, leftovers: Leftovers | undefined): Promise<{ status: BatchStatus | null; events: ProgressEvent[] }> {
  const events: ProgressEvent[] = [];
  // The leftovers before the batch (see "Lock order" above). None can appear after this:
  // a track leaves a terminal status only by a retry, which needs the batch terminal.
  const open = leftovers ? await lockOpenTracks(tx, batchId, leftovers.run) : [];
  const [locked] = await tx
    .select()
    .from(audioGenerationBatches)
    .where(eq(audioGenerationBatches.id, batchId))
    .for('update');
  if (!locked || !['pending', 'processing'].includes(locked.status)) return { status: null, events };
  if (leftovers && locked.run !== leftovers.run) return { status: null, events };
  let batch: typeof locked | undefined = locked;
  if (leftovers) {
    for (const id of open) {
      // The statement alone: finaliseBatch records these events' webhooks with its own at the
      // end. The transaction handle has the same query API as Db (the statement is prepared
      // per handle; this path is rare).
      const r = await moveToTerminal(tx as unknown as Db, id, { status: 'failed', errorType: leftovers.errorType, errorMessage: leftovers.reason(id) }, NOT_TERMINAL, undefined);
      events.push(...r.events);
    }
    if (open.length > 0) [batch] = await tx.select().from(audioGenerationBatches).where(eq(audioGenerationBatches.id, batchId));
  }
  if (!batch || batch.tracksPending > 0) return { status: null, events };
  const status = terminalStatusFor(batch);
  const failures = await tx
    .select({ errorType: audioTracks.errorType, errorMessage: audioTracks.errorMessage })
    .from(audioTracks)
    .where(and(eq(audioTracks.batchId, batchId), eq(audioTracks.status, 'failed')));
  let errorMessage = leftovers?.errorMessage ?? summariseFailures(failures, batch.totalTracksExpected);
  if (status === 'cancelled') {
    errorMessage = `Cancelled: ${batch.tracksCancelled} of ${batch.totalTracksExpected} tracks were not started.${errorMessage ? ` ${errorMessage}` : ''}`;
  }
  const [done] = await tx
    .update(audioGenerationBatches)
    .set({ status, errorMessage, completedAt: sql`now()`, updatedAt: sql`now()` })
    .where(eq(audioGenerationBatches.id, batchId))
    .returning();
  if (!done) return { status: null, events };
  events.push(batchCountersEvent(done));
  events.push({
    subject: { kind: 'batch', id: batchId },
    type: `batch.${status}`,
    data: { ...batchCountersEvent(done).data, errorMessage, completedAt: done.completedAt },
    terminal: true,
  });
  // Counted by the callers once this has committed (countEnd).
  return { status, events };
}
