import pg from 'pg';

// Connection errors raised before anything was sent: no transaction began.
const NEVER_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/**
 * Whether a write that failed with `error` surely changed nothing: PostgreSQL refused it (an
 * error it sends rolls the transaction back), or it could not be reached at all. A connection
 * lost on the way (reset, terminated, the server shutting down: classes 08 and 57P) leaves
 * open whether a COMMIT already sent took effect. drizzle wraps a query's error as its cause.
 */
export function surelyNotCommitted(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof pg.DatabaseError) return !/^(08|57P)/.test(e.code ?? '');
    const code = (e as NodeJS.ErrnoException).code;
    if (code && NEVER_CONNECTED.has(code)) return true;
  }
  return false;
}
