import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkerContext, startWorkers } from '@soundqueue/worker';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { createTestEnv, type TestEnv } from '../helpers/services';

// Redis that may evict keys under memory pressure can drop queued jobs: a worker says so at
// start (and says nothing when the policy is noeviction). A private redis-server, since the
// test changes its configuration.

let env: TestEnv;
let redis: OwnRedis;
beforeAll(async () => {
  env = await createTestEnv();
  redis = await startOwnRedis();
});
afterAll(async () => {
  await redis?.stop();
  await env?.cleanup();
});

/** Starts a worker on the private Redis with `policy` and returns what it logged at warn. */
async function warningsAtStart(policy: string): Promise<Array<{ msg: string; policy?: string }>> {
  const admin = new Redis(redis.url);
  await admin.config('SET', 'maxmemory-policy', policy);
  admin.disconnect();
  const lines: Array<{ msg: string; policy?: string }> = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  const ctx = await createWorkerContext({ ...env.config, REDIS_URL: redis.url }, { logger: pino({ level: 'warn' }, sink) });
  const running = await startWorkers(ctx, ['audio-mix']);
  await running.close();
  await ctx.close();
  return lines;
}

describe('the eviction warning', () => {
  it('is logged when maxmemory-policy allows eviction, naming the policy', async () => {
    const lines = await warningsAtStart('allkeys-lru');
    expect(lines.filter((l) => l.policy === 'allkeys-lru')).toEqual([
      expect.objectContaining({ msg: expect.stringContaining('Set maxmemory-policy noeviction') }),
    ]);
  });

  it('is not logged with noeviction', async () => {
    const lines = await warningsAtStart('noeviction');
    expect(lines.filter((l) => l.msg.includes('maxmemory-policy'))).toEqual([]);
  });
});
