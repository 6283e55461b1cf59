import type { Request, Response } from 'express';
import type { Subject } from '@soundqueue/shared/events';
import { compareIds, isStreamId, type EventHub, type StreamEvent } from './event-hub';

export interface StreamOptions {
  hub: EventHub;
  subject: Subject;
  /** The full current state, sent first (and instead of a replay the log cannot serve). */
  snapshot: () => Promise<{ data: Record<string, unknown>; terminal: boolean }>;
  heartbeatMs: number;
}

/**
 * How much a stream may hold for a client that has stopped reading before it is ended: the
 * client (EventSource reconnects by itself) resumes from its Last-Event-ID, so ending costs it
 * nothing, while holding on would grow the process's memory for as long as it stays silent.
 */
export const MAX_UNREAD_BYTES = 1024 * 1024;

/**
 * Serves one Server-Sent Events stream: a snapshot (or, with Last-Event-ID, the missed
 * events from the log), then every change, a heartbeat comment, and the end after the
 * terminal event (or at once, with the final snapshot, when resuming after it). Live events
 * are buffered while the snapshot is read, so none falls in the gap between the two; after
 * the events subscriber reconnects, the stream catches up from the log the same way.
 */
export async function streamEvents(req: Request, res: Response, options: StreamOptions): Promise<void> {
  const buffered: StreamEvent[] = [];
  let lastId = '0-0';
  let open = true;
  let live = false;
  let gapWhileStarting = false;
  let stop: (() => void) | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  const finish = () => {
    if (!open) return;
    open = false;
    clearInterval(heartbeat);
    stop?.();
    res.end();
  };
  // Watched before anything is awaited: a client that goes away while the stream is being
  // set up (the route's ownership check, the subscription) must not leave it behind.
  res.on('close', finish);
  if (req.socket.destroyed || res.destroyed) {
    finish();
    return;
  }
  const send = (text: string) => {
    if (!open) return;
    res.write(text);
    if (res.writableLength > MAX_UNREAD_BYTES) {
      finish();
      res.destroy(); // what it has not read is dropped with the connection
    }
  };
  const deliver = (event: StreamEvent) => {
    if (!open || compareIds(event.id, lastId) <= 0) return;
    lastId = event.id;
    send(`id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event.data)}\n\n`);
    if (event.terminal) finish();
  };
  // Events published while the subscriber was reconnecting: replayed from the log, live ones
  // held back meanwhile so the order stays. A log that no longer reaches back that far ends
  // the stream; the client's reconnect then gets a fresh snapshot.
  const catchUp = async () => {
    live = false;
    const missed = await options.hub.replay(options.subject, lastId).catch(() => null);
    if (!open) return;
    if (missed === null) {
      finish();
      return;
    }
    for (const event of missed) deliver(event);
    live = true;
    for (const event of buffered.splice(0)) deliver(event);
  };
  const unlisten = await options.hub.listen(
    options.subject,
    (event) => (live ? deliver(event) : buffered.push(event)),
    () => {
      if (!open) return;
      if (live) void catchUp();
      else gapWhileStarting = true;
    },
  );
  stop = unlisten;
  if (!open) {
    unlisten();
    return;
  }

  res.status(200);
  res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
  res.setHeader('Cache-Control', 'no-cache, no-transform');
  res.setHeader('Connection', 'keep-alive');
  res.setHeader('X-Accel-Buffering', 'no');
  res.flushHeaders();
  send('retry: 2000\n\n');
  heartbeat = setInterval(() => send(': heartbeat\n\n'), options.heartbeatMs);

  const header = req.get('Last-Event-ID') ?? (typeof req.query.lastEventId === 'string' ? req.query.lastEventId : undefined);
  const resumeFrom = header && isStreamId(header) ? header : undefined;
  const replayed = resumeFrom ? await options.hub.replay(options.subject, resumeFrom) : null;
  if (!open) return;
  if (replayed) {
    lastId = resumeFrom!;
    for (const event of replayed) deliver(event);
  } else {
    // The snapshot's id is the newest logged event, read before the state: any change after
    // it arrives live with a larger id; a change before it is inside the snapshot.
    const id = await options.hub.latestId(options.subject);
    const snapshot = await options.snapshot();
    if (!open) return;
    lastId = id;
    send(`id: ${id}\nevent: snapshot\ndata: ${JSON.stringify(snapshot.data)}\n\n`);
    if (snapshot.terminal) {
      finish();
      return;
    }
  }
  live = true;
  for (const event of buffered.splice(0)) deliver(event);
  if (gapWhileStarting) await catchUp();
  if (replayed && open) {
    // Resumed after the end: the terminal event is at or before Last-Event-ID, so nothing
    // would ever end this stream, and EventSource reconnects whenever a stream closes. If the
    // subject has finished, send its final state and end, as a stream opened after the end
    // does. (A terminal event still arriving live ends the stream by itself meanwhile.)
    const snapshot = await options.snapshot();
    if (open && snapshot.terminal) {
      send(`id: ${lastId}\nevent: snapshot\ndata: ${JSON.stringify(snapshot.data)}\n\n`);
      finish();
    }
  }
}
