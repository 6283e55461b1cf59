import { HttpError } from './http-errors';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A malformed id cannot name anything: answer 404 (never a database error). */
export function parseId(value: unknown, what: string): string {
  if (typeof value !== 'string' || !UUID.test(value)) throw new HttpError(404, 'not_found', `${what} not found`);
  return value.toLowerCase();
}

/** Opaque cursor for newest-first paging: the last row's (created_at, id). */
export function encodeCursor(createdAt: Date, id: string): string {
  return Buffer.from(`${createdAt.toISOString()}|${id}`).toString('base64url');
}

// What toISOString gives for the years PostgreSQL and JavaScript both hold (0001–9999):
// anything else (an extended year like +275760, a date alone) is not a cursor we made, and
// some of it PostgreSQL refuses with an error that would have been a 500.
const CURSOR_TIME = /^(?!0000)\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

export function decodeCursor(cursor: string): { createdAt: Date; id: string } {
  const [at = '', id, ...rest] = Buffer.from(cursor, 'base64url').toString().split('|');
  const createdAt = new Date(at);
  if (!id || rest.length > 0 || !UUID.test(id) || !CURSOR_TIME.test(at) || Number.isNaN(createdAt.getTime()) || createdAt.toISOString() !== at) {
    throw new HttpError(400, 'validation_failed', 'query.cursor: not a cursor this API returned', [
      { path: 'query.cursor', message: 'invalid cursor' },
    ]);
  }
  return { createdAt, id };
}
