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

function write(res: Response, event: { id: string; type: string; data: unknown }): void {
  res.write(`id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event.data)}\n\n`);
}

/**
 * Serves one Server-Sent Events stream: a snapshot (or, with Last-Event-ID, the missed
 * events from the log), then every change, a heartbeat comment, and the end after the
 * terminal event (or at once, with the final snapshot, when resuming after it). Live events are buffered while the snapshot is read, so none falls in
 * the gap between the two.
 */
export async function streamEvents(req: Request, res: Response, options: StreamOptions): Promise<void> {
  const buffered: StreamEvent[] = [];
  let lastId = '0-0';
  let open = true;
  let live = false;
  const finish = () => {
    if (!open) return;
    open = false;
    clearInterval(heartbeat);
    stop();
    res.end();
  };
  const deliver = (event: StreamEvent) => {
    if (!open || compareIds(event.id, lastId) <= 0) return;
    lastId = event.id;
    write(res, event);
    if (event.terminal) finish();
  };
  const stop = await options.hub.listen(options.subject, (event) => (live ? deliver(event) : buffered.push(event)));
  req.on('close', finish);

  res.status(200);
  res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
  res.setHeader('Cache-Control', 'no-cache, no-transform');
  res.setHeader('Connection', 'keep-alive');
  res.setHeader('X-Accel-Buffering', 'no');
  res.flushHeaders();
  res.write('retry: 2000\n\n');
  const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), options.heartbeatMs);

  const header = req.get('Last-Event-ID') ?? (typeof req.query.lastEventId === 'string' ? req.query.lastEventId : undefined);
  const resumeFrom = header && isStreamId(header) ? header : undefined;
  const replayed = resumeFrom ? await options.hub.replay(options.subject, resumeFrom) : null;
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
    write(res, { id, type: 'snapshot', data: snapshot.data });
    if (snapshot.terminal) {
      finish();
      return;
    }
  }
  live = true;
  for (const event of buffered.splice(0)) deliver(event);
  if (replayed && open) {
    // Resumed after the end: the terminal event is at or before Last-Event-ID, so nothing
    // would ever end this stream, and EventSource reconnects whenever a stream closes. If the
    // subject has finished, send its final state and end, as a stream opened after the end
    // does. (A terminal event still arriving live ends the stream by itself meanwhile.)
    const snapshot = await options.snapshot();
    if (open && snapshot.terminal) {
      write(res, { id: lastId, type: 'snapshot', data: snapshot.data });
      finish();
    }
  }
}
