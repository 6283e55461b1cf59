import { setMaxListeners } from 'node:events';
import type { Request, Response } from 'express';
import { HttpError } from '../http-errors';

/**
 * How long a refused client is told to wait. A slot frees when one of the user's own streams
 * ends, which nobody can predict; a few seconds keeps a retrying script from spinning.
 */
export const STREAMS_RETRY_AFTER_SECONDS = 5;

/**
 * Counts the event streams each user holds open in this API process, up to a cap. Each open
 * stream holds a socket, a subscription listener and a heartbeat timer; the count is per
 * process (replicas do not share it), which bounds what one process holds for one user.
 * On shutdown it is also what ends them all and refuses new ones.
 */
export interface StreamLimit {
  /**
   * Takes a slot for the request's user, given back when its response closes, whatever ends
   * it (the client leaving, the stream's end, an error answer such as 404, a server
   * shutdown). Throws 429 `too_many_streams` when the user is at the cap; false when the
   * client has gone already (nothing to serve, no slot taken). Once close() was called it
   * admits every request without a slot: the stream ends as soon as it starts.
   */
  admit(req: Request, res: Response, userId: string): boolean;
  /** Streams the user holds open in this process. */
  openFor(userId: string): number;
  /** Aborted by close(): every admitted stream watches it and ends itself at once. */
  readonly shutdown: AbortSignal;
  /** The server is shutting down: ends every admitted stream, and every one admitted from now on. */
  close(): void;
}

export function createStreamLimit(maxPerUser: number): StreamLimit {
  const open = new Map<string, number>();
  const closing = new AbortController();
  // One listener per open stream, by design: not the leak Node warns about past ten.
  setMaxListeners(0, closing.signal);
  const release = (userId: string) => {
    const n = (open.get(userId) ?? 1) - 1;
    if (n > 0) open.set(userId, n);
    else open.delete(userId); // no entry kept per user who ever streamed
  };
  return {
    admit(req, res, userId) {
      // A client that left during authentication: its response has closed already and will
      // not say so again, so a slot taken now would never be given back.
      if (res.destroyed || req.socket.destroyed) return false;
      // Only a request already on one of this process's connections gets here once the
      // listener is closed. It is served like every stream on shutdown, ended at once with a
      // short `retry` (streamEvents), takes no slot, and its client reconnects, on a new
      // connection, to a replica still listening: a 503 would end a browser's EventSource
      // for good.
      if (closing.signal.aborted) return true;
      const n = open.get(userId) ?? 0;
      if (n >= maxPerUser) {
        res.setHeader('Retry-After', String(STREAMS_RETRY_AFTER_SECONDS));
        throw new HttpError(429, 'too_many_streams', `at most ${maxPerUser} event streams may be open at once per user; close one first`, { limit: maxPerUser });
      }
      open.set(userId, n + 1);
      res.once('close', () => release(userId));
      return true;
    },
    openFor: (userId) => open.get(userId) ?? 0,
    shutdown: closing.signal,
    close: () => closing.abort(),
  };
}
