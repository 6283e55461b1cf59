import type { Request, Response } from 'express';
import type { Subject } from '@soundqueue/shared/events';
import { compareIds, isStreamId, type EventHub, type StreamEvent } from './event-hub';
import { rowVersions } from './row-versions';

export interface Snapshot {
  data: Record<string, unknown>;
  terminal: boolean;
  /** The subject's run: it ends once per run (a retry or restart starts the next one). */
  run: number;
}

export interface StreamOptions {
  hub: EventHub;
  subject: Subject;
  /** The full current state, sent first (and instead of a replay the log cannot serve). */
  snapshot: () => Promise<Snapshot>;
  heartbeatMs: number;
  /** Aborted when the server shuts down: the stream then ends at once, resumable (see below). */
  shutdown: AbortSignal;
}

/**
 * The id of a final snapshot: "this client has the end of run N". A log id would not do: a
 * stream opened after the end, or after the log expired, has no log entry that says the
 * subject ended, and the log may be gone by the client's reconnect. Not a Redis stream id
 * (isStreamId refuses it), so nothing replays from it; naming the run means a retry that has
 * ended again since is not mistaken for the end the client has.
 */
export function endId(run: number): string {
  return `end-${run}`;
}

const END_ID = /^end-(\d{1,15})$/;

/** How a stream starts: with the missed events, with a snapshot, or not at all (204). */
type Start = { kind: 'replay'; from: string; events: StreamEvent[] } | { kind: 'snapshot' } | { kind: 'nothing-left' };

/**
 * Where a (re)connecting client starts. EventSource reconnects ~2 s after every stream that
 * closes, for ever, unless it is answered 204: a client that already has the end is answered
 * so. One that resumes from an id the log holds has it when nothing follows that id, the
 * newest logged event is terminal and the subject is finished (not retried since); one that
 * resumes from a final snapshot's id has it while that run's end is still the subject's state.
 */
/** What deciding a stream's start reads. */
type StartSources = Pick<StreamOptions, 'hub' | 'subject' | 'snapshot'>;

async function startOf(options: StartSources, resumeFrom: string | undefined): Promise<Start> {
  if (resumeFrom !== undefined && isStreamId(resumeFrom)) {
    // A log Redis cannot give now (Redis away) is one that cannot say what follows: the state
    // is PostgreSQL's, and a 503 would stop EventSource for good (see NO_LOG_ID).
    const read = await readLog(options, resumeFrom).catch(() => null);
    if (read === null) return { kind: 'snapshot' }; // the log no longer reaches back, or cannot be read
    if (read.events.length === 0 && read.newestTerminal && (await options.snapshot()).terminal) return { kind: 'nothing-left' };
    return { kind: 'replay', from: resumeFrom, events: read.events };
  }
  const endedRun = resumeFrom === undefined ? null : END_ID.exec(resumeFrom)?.[1];
  if (endedRun) {
    const state = await options.snapshot();
    if (state.terminal && state.run === Number(endedRun)) return { kind: 'nothing-left' };
  }
  return { kind: 'snapshot' };
}

/** The log's entries after `resumeFrom` (null: it cannot say) and whether its newest is terminal. */
async function readLog(options: StartSources, resumeFrom: string): Promise<{ events: StreamEvent[]; newestTerminal: boolean } | null> {
  const events = await options.hub.replay(options.subject, resumeFrom);
  if (events === null) return null;
  return { events, newestTerminal: events.length === 0 && (await options.hub.newest(options.subject))?.terminal === true };
}

/**
 * The id of a snapshot read while the log could not be (Redis away): no entry, so a client
 * resuming from it gets a fresh snapshot (replay refuses an id before the log's oldest, or any
 * id of an empty log), and a catch-up from it, once the events subscriber is back, ends the
 * stream so that the client does. Serving the snapshot, rather than a 503, keeps EventSource
 * (for which any status but 200 and 204 is final) following the batch or book.
 */
const NO_LOG_ID = '0-0';

/**
 * How much a stream may hold for a client that has stopped reading before it is ended: the
 * client (EventSource reconnects by itself) resumes from its Last-Event-ID, so ending costs it
 * nothing, while holding on would grow the process's memory for as long as it stays silent.
 */
export const MAX_UNREAD_BYTES = 1024 * 1024;

/**
 * The `retry` sent with a shutdown's end: the client's reconnect delay, in ms, drawn from
 * [min, min + spread) so that the clients of a replica going away come back promptly but not
 * all in the same instant. Each stream sets the usual 2 s again when it starts.
 */
const SHUTDOWN_RETRY_MS = { min: 250, spread: 1000 };

/**
 * Serves one Server-Sent Events stream: a snapshot (or, with Last-Event-ID, the missed
 * events from the log), then every change, a heartbeat comment, and the end after the
 * terminal event (or at once, with the final snapshot, when the subject has finished). A
 * client resuming with nothing left to receive, the end included, is answered 204, which
 * stops EventSource's reconnecting. Live events are buffered while the snapshot is read, so
 * none falls in the gap between the two; after the events subscriber reconnects, the stream
 * catches up from the log the same way.
 */
/** Where the client resumes from: Last-Event-ID, or `?lastEventId=` for clients that cannot set headers (the header wins). */
function resumeIdOf(req: Request): string | undefined {
  return req.get('Last-Event-ID') ?? (typeof req.query.lastEventId === 'string' ? req.query.lastEventId : undefined);
}

/**
 * A HEAD of an event stream: the status and headers the GET would start with (204 for a
 * client that has everything, else 200 and the stream's headers), decided as streamEvents
 * decides them, without opening a stream.
 */
export async function answerStreamHead(req: Request, res: Response, options: StartSources): Promise<void> {
  if ((await startOf(options, resumeIdOf(req))).kind === 'nothing-left') res.status(204);
  else setStreamHeaders(res);
  res.end();
}

/** The status and headers of an event stream's response (a HEAD gets them too). */
export function setStreamHeaders(res: Response): void {
  res.status(200);
  res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
  res.setHeader('Cache-Control', 'no-cache, no-transform');
  res.setHeader('X-Accel-Buffering', 'no');
}

export async function streamEvents(req: Request, res: Response, options: StreamOptions): Promise<void> {
  const buffered: StreamEvent[] = [];
  let lastId = '0-0';
  let open = true;
  // Live events are sent as they come only once the stream has started and nothing is
  // missing before them; until then they wait in `buffered`. From the moment the events
  // subscriber loses its connection (`down`) until a catch-up from the log has run, what was
  // published meanwhile is only in the log (`behind`): nothing is sent live, so the last id
  // sent stays before every event that may be missing, and the catch-up replays from there.
  let live = false;
  let started = false;
  let down = false;
  let behind = false;
  let stop: (() => void) | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  const finish = () => {
    if (!open) return;
    open = false;
    clearInterval(heartbeat);
    options.shutdown.removeEventListener('abort', endForShutdown);
    stop?.();
    res.end();
  };
  const begin = () => {
    setStreamHeaders(res);
    res.setHeader('Connection', 'keep-alive');
    res.flushHeaders();
  };
  const send = (text: string) => {
    if (!open) return;
    res.write(text);
    if (res.writableLength > MAX_UNREAD_BYTES) {
      finish();
      res.destroy(); // what it has not read is dropped with the connection
    }
  };
  // The server is shutting down: the stream ends now, cleanly, with no id and no event, so
  // nothing in it says the subject ended. The client reconnects (the server lets this
  // connection go, so to a replica still listening) and resumes from its Last-Event-ID as
  // after any disconnect. A stream still being set up ends the same way, as an empty one.
  const endForShutdown = () => {
    if (!open) return;
    if (!res.headersSent) begin();
    send(`retry: ${SHUTDOWN_RETRY_MS.min + Math.floor(Math.random() * SHUTDOWN_RETRY_MS.spread)}\n\n`);
    finish();
  };
  // Watched before anything is awaited: a client that goes away while the stream is being
  // set up (the route's ownership check, the subscription) must not leave it behind.
  res.on('close', finish);
  if (req.socket.destroyed || res.destroyed) {
    finish();
    return;
  }
  options.shutdown.addEventListener('abort', endForShutdown);
  if (options.shutdown.aborted) {
    endForShutdown(); // it began during the route's ownership check
    return;
  }
  // Events can reach the log out of commit order: one older than a state this client has
  // (a snapshot, an event) is not shown. Its id alone is sent, an SSE block without data that
  // dispatches nothing but moves the client's Last-Event-ID past it.
  const versions = rowVersions();
  const deliver = (event: StreamEvent) => {
    if (!open || compareIds(event.id, lastId) <= 0) return;
    lastId = event.id;
    if (versions.isStale(event)) return send(`id: ${event.id}\n\n`);
    send(`id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event.data)}\n\n`);
    if (event.terminal) finish();
  };
  // Events published while the subscriber was away: replayed from the log, live ones held
  // back meanwhile so the order stays. A log that no longer reaches back that far ends the
  // stream; the client's reconnect then gets a fresh snapshot. One catch-up at a time: two
  // that overlapped could send live events past a gap the other has not replayed yet.
  const catchUp = async () => {
    if (!open || down) return; // the subscriber's return catches up
    behind = false;
    live = false;
    const missed = await options.hub.replay(options.subject, lastId).catch(() => null);
    if (!open) return;
    if (missed === null) {
      finish();
      return;
    }
    for (const event of missed) deliver(event);
    if (behind) return; // lost again since the replay was read: the next catch-up goes on
    live = true;
    for (const event of buffered.splice(0)) deliver(event);
  };
  let catchingUp = Promise.resolve();
  const catchUpInTurn = () => (catchingUp = catchingUp.then(catchUp));
  const unlisten = await options.hub.listen(
    options.subject,
    (event) => (live ? deliver(event) : buffered.push(event)),
    () => {
      down = false;
      if (started) void catchUpInTurn(); // else the start catches up
    },
    () => {
      down = true;
      behind = true;
      live = false;
    },
  );
  stop = unlisten;
  if (!open) {
    unlisten();
    return;
  }

  // Decided before any header is sent: the answer may be a 204 rather than a stream.
  const start = await startOf(options, resumeIdOf(req));
  if (!open) return;
  if (start.kind === 'nothing-left') {
    res.status(204);
    finish();
    return;
  }

  begin();
  send('retry: 2000\n\n');
  heartbeat = setInterval(() => send(': heartbeat\n\n'), options.heartbeatMs);

  if (start.kind === 'replay') {
    lastId = start.from;
    // What the client had before it left holds the newest versions it has shown.
    for (const event of await options.hub.history(options.subject, start.from).catch(() => [])) versions.saw(event.data);
    for (const event of start.events) deliver(event);
  } else {
    // The snapshot's id is the newest logged event, read before the state: any change after
    // it arrives live with a larger id; a change before it is inside the snapshot.
    const id = await options.hub.latestId(options.subject).catch(() => NO_LOG_ID);
    const snapshot = await options.snapshot();
    if (!open) return;
    lastId = id;
    versions.saw(snapshot.data);
    send(`id: ${snapshot.terminal ? endId(snapshot.run) : id}\nevent: snapshot\ndata: ${JSON.stringify(snapshot.data)}\n\n`);
    if (snapshot.terminal) {
      finish();
      return;
    }
  }
  started = true;
  if (behind) {
    // The subscriber lost its connection while the stream was set up: some of the held-back
    // events may follow a gap, so the log fills it first (or, still away, on its return).
    await catchUpInTurn();
  } else {
    live = true;
    for (const event of buffered.splice(0)) deliver(event);
  }
  if (start.kind === 'replay' && open) {
    // The replay held no terminal event, yet the subject may have finished: its terminal event
    // not logged yet (the row commits first), or never (a publish Redis refused). Nothing
    // would then end this stream: send the final state and end, with the id whose reconnect
    // is answered 204. (A terminal event arriving live meanwhile ends the stream by itself.)
    const snapshot = await options.snapshot();
    if (open && snapshot.terminal) {
      send(`id: ${endId(snapshot.run)}\nevent: snapshot\ndata: ${JSON.stringify(snapshot.data)}\n\n`);
      finish();
    }
  }
}
