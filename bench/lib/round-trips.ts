import { Redis } from 'ioredis';
import pg from 'pg';
import { markUncounted } from './common';

// What one round trip to Redis or PostgreSQL costs this Node process in CPU on this machine:
// the floor under any flow that talks to them, whatever it sends. Measured with the smallest
// request each (PING; a prepared one-row select), awaited one after another as a job's steps
// are, and ten at a time as concurrent jobs' steps can be.

export interface RoundTripCost {
  /** Node CPU (user + system) per round trip, microseconds. */
  oneAtATimeUs: number;
  tenAtOnceUs: number;
}

async function cpuPerCall(calls: number, once: () => Promise<unknown>, parallel: number): Promise<number> {
  for (let i = 0; i < 200; i++) await once(); // warm: JIT, connections, the prepared plan
  const before = process.cpuUsage();
  for (let done = 0; done < calls; done += parallel) await Promise.all(Array.from({ length: parallel }, once));
  const used = process.cpuUsage(before);
  return (used.user + used.system) / calls;
}

export async function roundTripCosts(redisUrl: string, databaseUrl: string, calls = 4_000): Promise<{ redis: RoundTripCost; postgres: RoundTripCost }> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 10 });
  markUncounted(pool);
  try {
    const ping = () => redis.ping();
    const select = () => pool.query({ name: 'sq_bench_round_trip', text: 'select $1::int as n', values: [1] });
    return {
      redis: { oneAtATimeUs: await cpuPerCall(calls, ping, 1), tenAtOnceUs: await cpuPerCall(calls, ping, 10) },
      postgres: { oneAtATimeUs: await cpuPerCall(calls, select, 1), tenAtOnceUs: await cpuPerCall(calls, select, 10) },
    };
  } finally {
    redis.disconnect();
    await pool.end();
  }
}
