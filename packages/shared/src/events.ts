import type { Redis } from 'ioredis';

// Progress events: one per change of a track, spread, soundscape, counter or status. They
// are appended to a bounded Redis stream per batch or book (so Last-Event-ID can resume
// without a gap) and announced on one pub/sub channel (so any API replica can fan them out
// to its open event streams over a single subscriber connection).

export type Subject = { kind: 'batch' | 'book'; id: string };

export interface ProgressEvent {
  subject: Subject;
  /** e.g. track.updated, batch.updated, batch.completed, spread.updated, book.ready */
  type: string;
  data: Record<string, unknown>;
  /** True for the event after which nothing more happens (the stream ends). */
  terminal?: boolean;
}

export const EVENTS_CHANNEL = 'soundqueue:events';
export const EVENT_LOG_LENGTH = 2_000;

export function eventLogKey(prefix: string, subject: Subject): string {
  return `${prefix}:events:${subject.kind}:${subject.id}`;
}

export type Publish = (events: ProgressEvent[]) => Promise<void>;

/** A publisher bound to one Redis connection and key prefix. Failures are logged, not thrown:
 * the database already holds the change, and a client that misses an event resyncs from a
 * snapshot. */
export function createPublisher(
  redis: Redis,
  prefix: string,
  onError: (error: unknown) => void = () => {},
  ttl: { openSeconds: number; finishedSeconds: number } = { openSeconds: 86_400, finishedSeconds: 300 },
): Publish {
  return async (events) => {
    for (const event of events) {
      try {
        const body = JSON.stringify({ type: event.type, data: event.data, terminal: event.terminal ?? false });
        const key = eventLogKey(prefix, event.subject);
        const id = await redis.xadd(key, 'MAXLEN', '~', String(EVENT_LOG_LENGTH), '*', 'e', body);
        // Logs expire so Redis memory stays bounded: a day while work runs, minutes after its
        // terminal event (a client reconnecting later gets the final snapshot instead).
        await redis.expire(key, event.terminal ? ttl.finishedSeconds : ttl.openSeconds);
        await redis.publish(`${prefix}:${EVENTS_CHANNEL}`, JSON.stringify({ subject: event.subject, id, body }));
      } catch (error) {
        onError(error);
      }
    }
  };
}

export const noPublish: Publish = async () => {};
