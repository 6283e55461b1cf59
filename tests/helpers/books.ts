import { expect } from 'vitest';
import pg from 'pg';
import type { TestApi } from './app';
import { readJson } from './app';
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
