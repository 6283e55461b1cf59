import type { Redis } from 'ioredis';

/**
 * The event streams each user holds open across every API process, so that one cap holds
 * behind a load balancer too. One sorted set per user in Redis: a member per open stream,
 * scored by the time (Redis's clock, so replicas' clocks do not matter) its lease ends. The
 * process serving a stream renews its lease while it is open and removes it when it ends; a
 * process that dies (or loses Redis for longer than a lease) stops renewing, and its slots
 * are free once their leases have run out. Nothing is left to clean up, and the set itself
 * expires a lease after its last renewal.
 */
export interface StreamSlots {
  /** How long a slot outlives the last renewal of its lease. */
  readonly leaseMs: number;
  /** Takes a slot for `stream` if the user holds fewer than `cap`; false at the cap. */
  take(userId: string, stream: string, cap: number): Promise<boolean>;
  /** Extends the leases of the user's streams served by this process. */
  renew(userId: string, streams: string[]): Promise<void>;
  /** Gives a stream's slot back. */
  give(userId: string, stream: string): Promise<void>;
  /** How many slots the user holds (leases not run out), taking none. */
  held(userId: string): Promise<number>;
}

/** How long a slot outlives the last renewal of its lease: a dead process's slots are held this long. */
export const STREAM_LEASE_MS = 30_000;

// Expired leases are dropped first: they are the streams of a process that is gone.
const TAKE = `
local key, stream, cap, lease = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) >= cap then return 0 end
redis.call('ZADD', key, now + lease, stream)
redis.call('PEXPIRE', key, lease)
return 1`;

// Not ZADD XX: a stream whose lease ran out while this process could not reach Redis is
// still open, and counts again. A stream given back is not renewed: its removal was sent on
// the same connection before any renewal that no longer lists it.
const RENEW = `
local key, lease = KEYS[1], tonumber(ARGV[1])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i = 2, #ARGV do redis.call('ZADD', key, now + lease, ARGV[i]) end
redis.call('PEXPIRE', key, lease)
return 1`;

const HELD = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')`;

type SlotsRedis = Redis & {
  soundqueueHeldStreamSlots?: (key: string) => Promise<number>;
  soundqueueTakeStreamSlot?: (key: string, stream: string, cap: string, lease: string) => Promise<number>;
  soundqueueRenewStreamSlots?: (key: string, lease: string, ...streams: string[]) => Promise<number>;
};

export function redisStreamSlots(redis: Redis, prefix: string, leaseMs = STREAM_LEASE_MS): StreamSlots {
  const client = redis as SlotsRedis;
  if (!client.soundqueueTakeStreamSlot) client.defineCommand('soundqueueTakeStreamSlot', { numberOfKeys: 1, lua: TAKE });
  if (!client.soundqueueRenewStreamSlots) client.defineCommand('soundqueueRenewStreamSlots', { numberOfKeys: 1, lua: RENEW });
  if (!client.soundqueueHeldStreamSlots) client.defineCommand('soundqueueHeldStreamSlots', { numberOfKeys: 1, lua: HELD });
  const key = (userId: string) => `${prefix}:streams:${userId}`;
  return {
    leaseMs,
    take: async (userId, stream, cap) => (await client.soundqueueTakeStreamSlot!(key(userId), stream, String(cap), String(leaseMs))) === 1,
    renew: async (userId, streams) => {
      if (streams.length > 0) await client.soundqueueRenewStreamSlots!(key(userId), String(leaseMs), ...streams);
    },
    give: async (userId, stream) => {
      await redis.zrem(key(userId), stream);
    },
    held: async (userId) => Number(await client.soundqueueHeldStreamSlots!(key(userId))),
  };
}
