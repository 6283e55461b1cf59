import { z } from 'zod';
import { sql, type SQL } from 'drizzle-orm';
import type { AnyPgColumn } from 'drizzle-orm/pg-core';
import { HttpError } from './http-errors';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A malformed id cannot name anything: answer 404 (never a database error). */
export function parseId(value: unknown, what: string): string {
  if (typeof value !== 'string' || !UUID.test(value)) throw new HttpError(404, 'not_found', `${what} not found`);
  return value.toLowerCase();
}

/**
 * The time a newest-first page ends at, as the cursor carries it: created_at to the
 * microsecond, as PostgreSQL keeps it. A Date holds milliseconds only, and a cursor rounded
 * to them skipped the rows made later in that same millisecond (requests sent in parallel).
 */
export function cursorTime(createdAt: AnyPgColumn): SQL<string> {
  return sql<string>`to_char(${createdAt} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
}

/** Opaque cursor for newest-first paging: the last row's (created_at, id). */
function encodeCursor(at: string, id: string): string {
  return Buffer.from(`${at}|${id}`).toString('base64url');
}

// What cursorTime gives for the years PostgreSQL and JavaScript both hold (0001–9999), or
// what toISOString gave (milliseconds: a cursor an earlier version of the API returned):
// anything else (an extended year like +275760, a date alone) is not a cursor we made, and
// some of it PostgreSQL refuses with an error that would have been a 500.
const CURSOR_TIME = /^(?!0000)(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3})(\d{3})?Z$/;

function decodeCursor(cursor: string): { at: string; id: string } {
  const [at = '', id, ...rest] = Buffer.from(cursor, 'base64url').toString().split('|');
  // The date itself is checked to the millisecond: one that rolls over (February 30th) is not ours.
  const ms = `${CURSOR_TIME.exec(at)?.[1]}Z`;
  if (!id || rest.length > 0 || !UUID.test(id) || !CURSOR_TIME.test(at) || Number.isNaN(new Date(ms).getTime()) || new Date(ms).toISOString() !== ms) {
    throw new HttpError(400, 'validation_failed', 'query.cursor: not a cursor this API returned', [
      { path: 'query.cursor', message: 'invalid cursor' },
    ]);
  }
  return { at, id };
}

/** The rows after a cursor in newest-first (created_at, id) order; 400 for a cursor we did not make. */
export function afterCursor(createdAt: AnyPgColumn, id: AnyPgColumn, cursor: string): SQL {
  const c = decodeCursor(cursor);
  return sql`(${createdAt} < ${c.at}::timestamptz or (${createdAt} = ${c.at}::timestamptz and ${id} < ${c.id}::uuid))`;
}

/**
 * A page of rows fetched newest first with `limit + 1` (the one more says whether another
 * page follows, without counting), each carrying its cursorTime as `cursorAt`; and the cursor
 * that continues after it, or null on the last page.
 */
export function pageOf<R extends { cursorAt: string }>(rows: R[], limit: number, idOf: (row: R) => string): { page: R[]; nextCursor: string | null } {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return { page, nextCursor: rows.length > limit && last ? encodeCursor(last.cursorAt, idOf(last)) : null };
}

/**
 * A list's page size from the query string: 1 to `max`, written in digits only, as every number
 * setting is (config.ts). z.coerce.number took "1e1", "0x10", "5.0" and " 5" for numbers.
 */
export function pageLimit(max: number, fallback: number) {
  return z
    .string()
    .regex(/^\d{1,6}$/, `must be a whole number from 1 to ${max}, in digits`)
    .transform(Number)
    .pipe(z.number().int().min(1, `must be at least 1`).max(max, `must be at most ${max}`))
    .default(fallback)
    .meta({ description: `page size: 1 to ${max}, in digits; ${fallback} when left out` });
}
