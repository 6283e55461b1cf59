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
  /** True for the first event of a new run of a subject that had ended (a retry, a restart):
   * its log, kept only minutes since the end, is kept as long as an open one's again. */
  reopens?: boolean;
  /** Its webhook deliveries, when the transaction of its change recorded them (then they are
   * only queued after the commit; see recordWebhooksIn in webhooks.ts). Never published. */
  webhookDeliveries?: string[];
}

export const EVENTS_CHANNEL = 'soundqueue:events';
export const EVENT_LOG_LENGTH = 2_000;

export function eventLogKey(prefix: string, subject: Subject): string {
  return `${prefix}:events:${subject.kind}:${subject.id}`;
}

/** Present while a log is on its short expiry after its subject's terminal event. */
function endedKey(logKey: string): string {
  return `${logKey}:ended`;
}

export type Publish = (events: ProgressEvent[]) => Promise<void>;

// XADD, EXPIRE and PUBLISH for each of one subject's events, in one round trip. The
// announcement carries the id XADD assigns, so a plain pipeline cannot build it: the script
// joins `pre .. id .. post`, two halves of the announcement's JSON made by the caller.
// Logs expire so Redis memory stays bounded: a day while work runs, minutes after the
// terminal event (a client reconnecting later gets the final snapshot instead). Which of the
// two a log is on is kept beside it (KEYS[2], expiring with it from the terminal event),
// because events still come after the end: one a worker committed before the end but
// published after it must not give the finished log a day again. Only the first event of a
// new run (`reopens`) does.
const APPEND_AND_ANNOUNCE = `
local key, ended, channel, maxlen = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
for i = 3, #ARGV, 5 do
  local id = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'e', ARGV[i])
  local kind, ttl = ARGV[i + 1], ARGV[i + 2]
  if kind == 'terminal' then
    redis.call('EXPIRE', key, ttl)
    redis.call('SET', ended, '1', 'EX', ttl)
  elseif kind == 'reopens' then
    redis.call('DEL', ended)
    redis.call('EXPIRE', key, ttl)
  elseif redis.call('EXISTS', ended) == 0 then
    redis.call('EXPIRE', key, ttl)
  end
  redis.call('PUBLISH', channel, ARGV[i + 3] .. id .. ARGV[i + 4])
end
return 1`;

type EventRedis = Redis & { soundqueueAppendEvents?: (key: string, ...args: string[]) => Promise<unknown> };

/** A publisher bound to one Redis connection and key prefix. Failures are logged, not thrown:
 * the database already holds the change, and a client that misses an event resyncs from a
 * snapshot. Events keep their order: one subject's events go in one script call. */
export function createPublisher(
  redis: Redis,
  prefix: string,
  onError: (error: unknown) => void = () => {},
  ttl: { openSeconds: number; finishedSeconds: number } = { openSeconds: 86_400, finishedSeconds: 300 },
): Publish {
  const client = redis as EventRedis;
  // defineCommand sends EVALSHA and falls back to EVAL after a Redis restart (NOSCRIPT).
  if (!client.soundqueueAppendEvents) client.defineCommand('soundqueueAppendEvents', { numberOfKeys: 2, lua: APPEND_AND_ANNOUNCE });
  const channel = `${prefix}:${EVENTS_CHANNEL}`;
  return async (events) => {
    const bySubject = new Map<string, { key: string; args: string[] }>();
    for (const event of events) {
      const key = eventLogKey(prefix, event.subject);
      const body = JSON.stringify({ type: event.type, data: event.data, terminal: event.terminal ?? false });
      const entry = bySubject.get(key) ?? { key, args: [channel, String(EVENT_LOG_LENGTH)] };
      bySubject.set(key, entry);
      // The announcement is JSON {subject, id, body}; the id goes between the halves.
      const pre = `{"subject":${JSON.stringify(event.subject)},"id":"`;
      const post = `","body":${JSON.stringify(body)}}`;
      const kind = event.terminal ? 'terminal' : event.reopens ? 'reopens' : 'open';
      entry.args.push(body, kind, String(event.terminal ? ttl.finishedSeconds : ttl.openSeconds), pre, post);
    }
    for (const { key, args } of bySubject.values()) {
      try {
        await client.soundqueueAppendEvents!(key, endedKey(key), ...args);
      } catch (error) {
        onError(error);
      }
    }
  };
}

export const noPublish: Publish = async () => {};
