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

export function decodeCursor(cursor: string): { createdAt: Date; id: string } {
  const [at, id] = Buffer.from(cursor, 'base64url').toString().split('|');
  const createdAt = new Date(at ?? '');
  if (!id || !UUID.test(id) || Number.isNaN(createdAt.getTime())) {
    throw new HttpError(400, 'validation_failed', 'query.cursor: not a cursor this API returned', [
      { path: 'query.cursor', message: 'invalid cursor' },
    ]);
  }
  return { createdAt, id };
}
