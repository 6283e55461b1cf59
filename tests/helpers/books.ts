import { expect } from 'vitest';
import pg from 'pg';
import { reconcile } from '../../apps/worker/src/reconciler';
import type { TestApi, TestWorker } from './app';
import { readJson } from './app';
import { queryRows } from './services';
import { waitFor } from './wait';

export async function postBook(api: TestApi, body: unknown, user = 'reader') {
  const res = await api.request('/v1/books', { method: 'POST', json: body, user });
  return { status: res.status, body: await readJson(res) };
}

export async function uploadBook(api: TestApi, file: { name: string; type: string; data: Uint8Array | string }, fields: Record<string, string> = {}, user = 'reader') {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.set(k, v);
  form.set("file", new Blob([typeof file.data === "string" ? file.data : Buffer.from(file.data)], { type: file.type }), file.name);
  const res = await api.request('/v1/books', { method: 'POST', body: form, user });
  return { status: res.status, body: await readJson(res) };
}

export async function waitForBook(api: TestApi, id: string, user = 'reader', timeoutMs = 180_000) {
  return waitFor(
    async () => {
      const book = await readJson(await api.request(`/v1/books/${id}`, { user }));
      return ['ready', 'failed'].includes(book.status) ? book : null;
    },
    { timeoutMs, intervalMs: 200, what: `book ${id} to finish` },
  );
}

/** Counters equal their rows (DESIGN.md invariant 1, for books), read in one snapshot. */
export async function expectBookCountsMatchRows(databaseUrl: string, bookId: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query('begin isolation level repeatable read');
    const book = (await client.query('select * from books where id = $1', [bookId])).rows[0];
    const spreads = (await client.query(`select status, count(*)::int as n from book_spreads where book_id = $1 group by status`, [bookId])).rows;
    const sounds = (await client.query(`select status, count(*)::int as n from soundscapes where book_id = $1 group by status`, [bookId])).rows;
    const scenes = (await client.query(`select count(*)::int as n from scenes where book_id = $1`, [bookId])).rows[0].n;
    await client.query('commit');
    const of = (rows: { status: string; n: number }[], s: string) => rows.find((r) => r.status === s)?.n ?? 0;
    expect(book.processed_spreads).toBe(of(spreads, 'analyzed'));
    expect(book.failed_spreads).toBe(of(spreads, 'failed'));
    expect(book.soundscapes_generated).toBe(of(sounds, 'completed'));
    expect(book.soundscapes_failed).toBe(of(sounds, 'failed'));
    expect(book.scenes_created).toBe(scenes);
    expect(book.error_count).toBe(book.processing_errors.length);
  } finally {
    await client.end();
  }
}

/** Generates a book's soundscapes again (POST /v1/books/:id/soundscapes): a new run of the book. */
export async function restartBook(api: TestApi, bookId: string, user = 'reader'): Promise<void> {
  const res = await api.request(`/v1/books/${bookId}/soundscapes`, { method: 'POST', user });
  expect(res.status).toBe(202);
}

/** What the reconciler does to a book run that has not finished within STUCK_AFTER_MS (6 hours in tests). */
export async function timeOutBookRun(worker: TestWorker, databaseUrl: string, bookId: string): Promise<void> {
  await queryRows(databaseUrl, `update books set started_at = now() - interval '7 hours', updated_at = now() - interval '7 hours' where id = $1`, [bookId]);
  expect((await reconcile(worker.ctx)).booksTimedOut).toEqual([bookId]);
}

/** A book job once it has ended (BullMQ's state), read after its end: one read before holds no result yet. */
export async function endedJob(worker: TestWorker, queue: 'book-analyze' | 'soundscape', id: string) {
  return waitFor(async () => {
    const state = await worker.ctx.queues[queue].getJobState(id);
    return state === 'completed' || state === 'failed' ? worker.ctx.queues[queue].getJob(id) : null;
  }, { what: `job ${id} to end` });
}
