import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { Request, Response } from 'express';
import { HttpError } from '../http-errors';
import type { StreamSlots } from './stream-slots';

/**
 * How long a refused client is told to wait. A slot frees when one of the user's own streams
 * ends, which nobody can predict; a few seconds keeps a retrying script from spinning.
 */
export const STREAMS_RETRY_AFTER_SECONDS = 5;

/**
 * Caps the event streams each user holds open, across every API process (the slots are kept
 * in Redis, stream-slots.ts). Each open stream holds a socket, a subscription listener and a
 * heartbeat timer. On shutdown it is also what ends this process's streams and refuses new ones.
 */
export interface StreamLimit {
  /**
   * Takes a slot for the request's user, given back when its response closes, whatever ends
   * it (the client leaving, the stream's end, an error answer such as 404, a server
   * shutdown). Throws 429 `too_many_streams` when the user is at the cap; false when the
   * client has gone already (nothing to serve, no slot kept). Once close() was called it
   * admits every request without a slot: the stream ends as soon as it starts.
   */
  admit(req: Request, res: Response, userId: string): Promise<boolean>;
  /** Throws the 429 admit would, without taking a slot: for a HEAD, answered as the GET would be. */
  refuseAtCap(res: Response, userId: string): Promise<void>;
  /** Streams the user holds open in this process. */
  openFor(userId: string): number;
  /** Aborted by close(): every admitted stream watches it and ends itself at once. */
  readonly shutdown: AbortSignal;
  /** The server is shutting down: ends every admitted stream, and every one admitted from now on. */
  close(): void;
}

export function createStreamLimit(maxPerUser: number, slots: StreamSlots): StreamLimit {
  // This process's streams per user: the slots whose leases it renews.
  const open = new Map<string, Set<string>>();
  const closing = new AbortController();
  // One listener per open stream, by design: not the leak Node warns about past ten.
  setMaxListeners(0, closing.signal);
  const release = (userId: string, stream: string) => {
    const mine = open.get(userId);
    mine?.delete(stream);
    if (mine?.size === 0) open.delete(userId); // no entry kept per user who ever streamed
    // Not retried: a slot Redis did not hear back about is free when its lease runs out.
    slots.give(userId, stream).catch(() => {});
  };
  // Three renewals per lease, so that one lost to a blip costs no slot.
  const renewals = setInterval(() => {
    for (const [userId, streams] of open) slots.renew(userId, [...streams]).catch(() => {});
  }, slots.leaseMs / 3);
  renewals.unref();
  // Redis away (a restart, a blip): the stream is not refused for it (a 503 would stop an
  // EventSource for good), and this process's own count holds the cap meanwhile. The
  // stream's renewals enter it in Redis once it answers again.
  const takeSlot = (userId: string, stream: string) =>
    slots.take(userId, stream, maxPerUser).catch(() => (open.get(userId)?.size ?? 0) < maxPerUser);
  const tooMany = (res: Response) => {
    res.setHeader('Retry-After', String(STREAMS_RETRY_AFTER_SECONDS));
    return new HttpError(429, 'too_many_streams', `at most ${maxPerUser} event streams may be open at once per user; close one first`, { limit: maxPerUser });
  };
  return {
    async admit(req, res, userId) {
      // A client that left during authentication: its response has closed already and will
      // not say so again, so a slot taken now would never be given back.
      if (res.destroyed || req.socket.destroyed) return false;
      // Only a request already on one of this process's connections gets here once the
      // listener is closed. It is served like every stream on shutdown, ended at once with a
      // short `retry` (streamEvents), takes no slot, and its client reconnects, on a new
      // connection, to a replica still listening: a 503 would end a browser's EventSource
      // for good.
      if (closing.signal.aborted) return true;
      const stream = randomUUID();
      // Watched before Redis is asked: the client may leave while it answers.
      let taken = false;
      let gone = false;
      res.once('close', () => {
        gone = true;
        if (taken) release(userId, stream);
      });
      if (!(await takeSlot(userId, stream))) throw tooMany(res);
      if (gone) {
        slots.give(userId, stream).catch(() => {});
        return false;
      }
      taken = true;
      let mine = open.get(userId);
      if (!mine) open.set(userId, (mine = new Set()));
      mine.add(stream);
      return true;
    },
    async refuseAtCap(res, userId) {
      if (closing.signal.aborted) return;
      const held = await slots.held(userId).catch(() => open.get(userId)?.size ?? 0);
      if (held >= maxPerUser) throw tooMany(res);
    },
    openFor: (userId) => open.get(userId)?.size ?? 0,
    shutdown: closing.signal,
    close: () => {
      clearInterval(renewals);
      closing.abort();
    },
  };
}
