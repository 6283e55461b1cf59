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
   * its log, kept only minutes since the end, is kept as long as an open one's again, and an
   * earlier run's terminal event published after it (a lower `data.version`) is dropped. */
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

/** The highest version a `reopens` event of the log carried: what a terminal event must reach. */
function reopenedKey(logKey: string): string {
  return `${logKey}:reopened`;
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
// The other way round, a run's terminal event can come after the next run's `reopens` (its
// worker committed the end before the retry but published after it): the subject runs
// again, and that end is over. The highest version a `reopens` event carried is kept beside
// the log (KEYS[3], expiring with it), and a terminal event with a lower version is stale: it
// is neither logged nor announced, so it neither puts the running log on the short expiry
// nor marks it ended. Every stream would drop it anyway (its version is lower than the
// retry's, which precedes it), but as the log's newest entry it would read as the end: a
// resume from its id would be answered 204 once the new run ended before its own terminal
// event was logged. Every terminal event carries its row's version; one without would never
// be taken for stale.
const APPEND_AND_ANNOUNCE = `
local key, ended, reopened, channel, maxlen = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
for i = 3, #ARGV, 6 do
  local kind, ttl, version = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local stale = false
  if kind == 'terminal' and version then
    local since = tonumber(redis.call('GET', reopened))
    stale = since ~= nil and version < since
  end
  if not stale then
    local id = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'e', ARGV[i])
    if kind == 'terminal' then
      redis.call('EXPIRE', key, ttl)
      redis.call('EXPIRE', reopened, ttl)
      redis.call('SET', ended, '1', 'EX', ttl)
    elseif kind == 'reopens' then
      redis.call('DEL', ended)
      redis.call('EXPIRE', key, ttl)
      local since = tonumber(redis.call('GET', reopened))
      if version and (since == nil or version > since) then
        redis.call('SET', reopened, ARGV[i + 3], 'EX', ttl)
      else
        redis.call('EXPIRE', reopened, ttl)
      end
    elseif redis.call('EXISTS', ended) == 0 then
      redis.call('EXPIRE', key, ttl)
      redis.call('EXPIRE', reopened, ttl)
    end
    redis.call('PUBLISH', channel, ARGV[i + 4] .. id .. ARGV[i + 5])
  end
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
  if (!client.soundqueueAppendEvents) client.defineCommand('soundqueueAppendEvents', { numberOfKeys: 3, lua: APPEND_AND_ANNOUNCE });
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
      // The row's version, when the event carries one (see rollup/tracks.ts): how the script
      // tells a terminal event that a later run's `reopens` has overtaken.
      const version = typeof event.data.version === 'number' ? String(event.data.version) : '';
      entry.args.push(body, kind, String(event.terminal ? ttl.finishedSeconds : ttl.openSeconds), version, pre, post);
    }
    for (const { key, args } of bySubject.values()) {
      try {
        await client.soundqueueAppendEvents!(key, endedKey(key), reopenedKey(key), ...args);
      } catch (error) {
        onError(error);
      }
    }
  };
}

export const noPublish: Publish = async () => {};
