import type { Redis } from 'ioredis';
import { EVENTS_CHANNEL, eventLogKey, type Subject } from '@soundqueue/shared/events';

export interface StreamEvent {
  /** The Redis stream entry id: increasing per batch or book, usable as Last-Event-ID. */
  id: string;
  type: string;
  data: Record<string, unknown>;
  terminal: boolean;
}

interface Listener {
  event: (event: StreamEvent) => void;
  /** Called after the subscriber reconnected: events published meanwhile never arrived. */
  gap: () => void;
  /** Called when the subscriber has lost its connection (at once, for a listener added while
   * it is away): what is published from now until `gap` reaches no listener. */
  lost: () => void;
}

/**
 * Fans progress events out to this process's open event streams. One Redis subscriber
 * connection per API process, whatever the number of clients; any replica serves any
 * client because every worker publishes to the same channel.
 */
export class EventHub {
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly ready: Promise<unknown>;
  private readonly channel: string;
  /** False from the subscriber losing its connection until its subscription is certainly back. */
  private subscribed = false;

  constructor(
    private readonly redis: Redis,
    private readonly subscriber: Redis,
    private readonly prefix: string,
  ) {
    this.channel = `${prefix}:${EVENTS_CHANNEL}`;
    this.subscriber.on('message', (_channel, message) => this.dispatch(message));
    this.ready = this.subscriber.subscribe(this.channel).then(() => {
      this.subscribed = true;
    });
    // Closed before the subscription was made (a short-lived process): nothing to report.
    this.ready.catch(() => {});
    // Pub/sub keeps nothing for a subscriber that is away: whatever was published while this
    // connection was down (a Redis restart, a network blip, a killed client) is lost to it,
    // though it is in each subject's log. After every reconnect, once the subscription is
    // certainly back, each open stream is told to catch up from the log.
    let connections = 0;
    this.subscriber.on('ready', () => {
      connections += 1;
      if (connections > 1) void this.afterReconnect();
    });
    // Said at once, not only with the return: once the connection is back, events can arrive
    // before `gap` (in the same read as the subscribe reply afterReconnect waits for). A stream
    // that sent them on would move its last id past the events published while the connection
    // was down, and its catch-up, which replays from that id, would skip them.
    this.subscriber.on('close', () => {
      if (!this.subscribed) return;
      this.subscribed = false;
      for (const set of this.listeners.values()) for (const listener of set) listener.lost();
    });
  }

  private async afterReconnect(): Promise<void> {
    try {
      // ioredis subscribes again by itself; this reply, ordered after its own, says the
      // subscription is active, so nothing published from here on is missed.
      await this.subscriber.subscribe(this.channel);
    } catch {
      return; // Down again: the next reconnect tries again.
    }
    this.subscribed = true;
    for (const set of this.listeners.values()) for (const listener of set) listener.gap();
  }

  private dispatch(message: string): void {
    try {
      const { subject, id, body } = JSON.parse(message) as { subject: Subject; id: string; body: string };
      const set = this.listeners.get(`${subject.kind}:${subject.id}`);
      if (!set) return;
      const event = { id, ...(JSON.parse(body) as Omit<StreamEvent, 'id'>) };
      for (const listener of set) listener.event(event);
    } catch {
      // A malformed message is not ours to crash on.
    }
  }

  async listen(subject: Subject, onEvent: Listener['event'], onGap: Listener['gap'] = () => {}, onLost: Listener['lost'] = () => {}): Promise<() => void> {
    await this.ready;
    const listener: Listener = { event: onEvent, gap: onGap, lost: onLost };
    if (!this.subscribed) onLost();
    const key = `${subject.kind}:${subject.id}`;
    let set = this.listeners.get(key);
    if (!set) this.listeners.set(key, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(key);
    };
  }

  /** How many streams this process is serving (listeners across every subject). */
  listenerCount(): number {
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }

  /**
   * Entries after `afterId` from the bounded log, or null when the log cannot say what
   * follows it: it no longer reaches back that far, or `afterId` is past its newest entry.
   */
  async replay(subject: Subject, afterId: string): Promise<StreamEvent[] | null> {
    const key = eventLogKey(this.prefix, subject);
    const [oldest] = await this.redis.xrange(key, '-', '+', 'COUNT', 1);
    if (!oldest || compareIds(oldest[0], afterId) > 0) return null;
    const entries = await this.redis.xrange(key, `(${afterId}`, '+');
    if (entries.length === 0) {
      // No id this log gave is past its newest entry (one of another subject's log, or of a
      // log Redis lost and made again with its clock behind). Resuming from it, a stream
      // would take every event to come as already sent, its terminal one too, and show
      // nothing, for ever: the caller starts over from a snapshot instead.
      const newest = await this.newest(subject);
      if (!newest || compareIds(afterId, newest.id) > 0) return null;
    }
    return entries.map(logEntryEvent);
  }

  /** Entries up to and including `throughId`: what a client resuming from it already had. */
  async history(subject: Subject, throughId: string): Promise<StreamEvent[]> {
    const entries = await this.redis.xrange(eventLogKey(this.prefix, subject), '-', throughId);
    return entries.map(logEntryEvent);
  }

  /** The id of the newest entry in the log, so a snapshot can carry a resumable id. */
  async latestId(subject: Subject): Promise<string> {
    return (await this.newest(subject))?.id ?? '0-0';
  }

  /** The newest entry in the log and whether it was a terminal event; null for an empty or expired log. */
  async newest(subject: Subject): Promise<{ id: string; terminal: boolean } | null> {
    const [entry] = await this.redis.xrevrange(eventLogKey(this.prefix, subject), '+', '-', 'COUNT', 1);
    if (!entry) return null;
    return { id: entry[0], terminal: logEntryEvent(entry).terminal === true };
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.subscriber.disconnect();
  }
}

/** Orders Redis stream ids ("ms-seq"). */
export function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am - bm || as - bs;
}

const MAX_STREAM_ID_PART = 2n ** 64n - 1n;

/** A Redis stream id: two unsigned 64-bit numbers (a larger one made XRANGE fail mid-stream). */
export function isStreamId(value: string): boolean {
  const match = /^(\d{1,20})-(\d{1,20})$/.exec(value);
  return match !== null && BigInt(match[1]!) <= MAX_STREAM_ID_PART && BigInt(match[2]!) <= MAX_STREAM_ID_PART;
}

/** An event as the log holds it: one field, `e`, the JSON the publisher wrote (events.ts). */
function logEntryEvent([id, fields]: [string, string[]]): StreamEvent {
  return { id, ...(JSON.parse(fields[1] ?? '{}') as Omit<StreamEvent, 'id'>) };
}
