import { expect } from 'vitest';
import pg from 'pg';
import { expectCountersMatchRows } from './batches';
import { expectBookCountsMatchRows } from './books';

// What the reliability suite checks after breaking something: DESIGN.md's invariants, read
// from the rows, with the numbers returned so each scenario can record what it measured.

/** A small pool on a test database, for polling conditions and reading facts. */
export interface TestDb {
  rows<T = any>(text: string, params?: unknown[]): Promise<T[]>;
  one<T = any>(text: string, params?: unknown[]): Promise<T>;
  close(): Promise<void>;
}

export function openDb(url: string): TestDb {
  const pool = new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 5_000 });
  // A test that restarts PostgreSQL must not crash on its own idle client.
  pool.on('error', () => {});
  return {
    async rows(text, params = []) {
      return (await pool.query(text, params)).rows;
    },
    async one(text, params = []) {
      return (await pool.query(text, params)).rows[0];
    },
    close: () => pool.end(),
  };
}

const BATCH_TERMINAL = ['completed', 'partial_success', 'failed', 'cancelled'];
const TRACK_TERMINAL = ['completed', 'failed', 'cancelled'];

export interface BatchFacts {
  status: string;
  total: number;
  completed: number;
  failed: number;
  cancelled: number;
  pending: number;
  trackRows: number;
  distinctTracks: number;
  nonTerminalTracks: number;
  renditionsUsed: number;
  run: number;
}

/**
 * Invariants 1–3 for one batch: terminal, each counter equals its rows, one row per
 * section × variant, every track terminal, and the status matches the counts.
 */
export async function expectBatchSettled(db: TestDb, databaseUrl: string, batchId: string, sectionsTimesVariants: number): Promise<BatchFacts> {
  await expectCountersMatchRows(databaseUrl, batchId);
  const batch = await db.one('select * from audio_generation_batches where id = $1', [batchId]);
  const tracks = await db.one(
    `select count(*)::int as rows, count(distinct (set_id, section_key))::int as distinct_tracks,
            count(*) filter (where status not in ('completed', 'failed', 'cancelled'))::int as non_terminal,
            count(distinct rendition_key)::int as renditions
       from audio_tracks where batch_id = $1`,
    [batchId],
  );
  const facts: BatchFacts = {
    status: batch.status,
    total: batch.total_tracks_expected,
    completed: batch.tracks_completed,
    failed: batch.tracks_failed,
    cancelled: batch.tracks_cancelled,
    pending: batch.tracks_pending,
    trackRows: tracks.rows,
    distinctTracks: tracks.distinct_tracks,
    nonTerminalTracks: tracks.non_terminal,
    renditionsUsed: tracks.renditions,
    run: batch.run,
  };
  expect(BATCH_TERMINAL).toContain(facts.status);
  expect(facts.trackRows).toBe(sectionsTimesVariants);
  expect(facts.distinctTracks).toBe(sectionsTimesVariants);
  expect(facts.total).toBe(sectionsTimesVariants);
  expect(facts.nonTerminalTracks).toBe(0);
  expect(facts.pending).toBe(0);
  // Invariant 3: the status the counts call for.
  const expected = facts.cancelled > 0 ? 'cancelled' : facts.completed === facts.total ? 'completed' : facts.completed === 0 ? 'failed' : 'partial_success';
  expect(facts.status).toBe(expected);
  return facts;
}

export interface BookFacts {
  status: string;
  spreads: number;
  analyzed: number;
  failedSpreads: number;
  scenes: number;
  soundscapes: number;
  distinctSoundscapeScenes: number;
  soundscapesCompleted: number;
  nonTerminalSpreads: number;
  nonTerminalSoundscapes: number;
  errors: number;
  run: number;
}

/** Invariants 1–4 for one book: terminal, counters equal rows, one soundscape per scene. */
export async function expectBookSettled(db: TestDb, databaseUrl: string, bookId: string): Promise<BookFacts> {
  await expectBookCountsMatchRows(databaseUrl, bookId);
  const book = await db.one('select * from books where id = $1', [bookId]);
  const spreads = await db.one(
    `select count(*)::int as n, count(*) filter (where status = 'analyzed')::int as analyzed,
            count(*) filter (where status = 'failed')::int as failed,
            count(*) filter (where status not in ('analyzed', 'failed'))::int as open
       from book_spreads where book_id = $1`,
    [bookId],
  );
  const sounds = await db.one(
    `select count(*)::int as n, count(distinct scene_id)::int as scenes,
            count(*) filter (where status = 'completed')::int as completed,
            count(*) filter (where status not in ('completed', 'failed'))::int as open
       from soundscapes where book_id = $1`,
    [bookId],
  );
  const scenes = await db.one('select count(*)::int as n from scenes where book_id = $1', [bookId]);
  const facts: BookFacts = {
    status: book.status,
    spreads: spreads.n,
    analyzed: spreads.analyzed,
    failedSpreads: spreads.failed,
    scenes: scenes.n,
    soundscapes: sounds.n,
    distinctSoundscapeScenes: sounds.scenes,
    soundscapesCompleted: sounds.completed,
    nonTerminalSpreads: spreads.open,
    nonTerminalSoundscapes: sounds.open,
    errors: book.error_count,
    run: book.run,
  };
  expect(['ready', 'failed']).toContain(facts.status);
  expect(facts.spreads).toBe(book.spread_count);
  expect(facts.nonTerminalSpreads).toBe(0);
  expect(facts.nonTerminalSoundscapes).toBe(0);
  expect(facts.soundscapes).toBe(facts.scenes);
  expect(facts.distinctSoundscapeScenes).toBe(facts.scenes);
  expect(facts.status).toBe(facts.analyzed > 0 ? 'ready' : 'failed');
  return facts;
}

export const isTrackTerminal = (status: string) => TRACK_TERMINAL.includes(status);
