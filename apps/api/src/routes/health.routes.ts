import { once } from 'node:events';
import { sql } from 'drizzle-orm';
import { Router } from 'express';
import type { ApiContext } from '../context';

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms).unref())]);
}

export function healthRoutes(ctx: ApiContext): Router {
  const router = Router();
  // Liveness: the process answers. Nothing external, so a database outage never gets a
  // healthy API restarted in a loop.
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  // Readiness: both stores answer; a 503 names the one that does not. Redis is asked over
  // both of the API's connections to it: reads and events go over one, new work over the
  // other (createEnqueueConnection), and an API that cannot add flows is not ready to take
  // any. That one holds no command while it is not connected, so its ping waits for it to
  // connect (an API just started), as the other's does in its offline queue; the wait ends
  // after withTimeout's, whose message is the one reported.
  const pingEnqueue = async () => {
    if (ctx.enqueueRedis.status !== 'ready') await once(ctx.enqueueRedis, 'ready', { signal: AbortSignal.timeout(2_500) });
    await ctx.enqueueRedis.ping();
  };
  router.get('/readyz', async (_req, res) => {
    const [redis, postgres] = await Promise.allSettled([
      withTimeout(Promise.all([ctx.redis.ping(), pingEnqueue()]), 2_000),
      withTimeout(ctx.db.execute(sql`select 1`), 2_000),
    ]);
    const checks = {
      redis: redis.status === 'fulfilled' ? 'ok' : `unreachable: ${(redis.reason as Error).message}`,
      postgres: postgres.status === 'fulfilled' ? 'ok' : `unreachable: ${(postgres.reason as Error).message}`,
    };
    const down = Object.entries(checks).filter(([, v]) => v !== 'ok').map(([k]) => k);
    if (down.length === 0) {
      res.json({ status: 'ready', checks });
      return;
    }
    res.status(503).json({
      error: { code: 'not_ready', message: `not ready: ${down.join(' and ')} unreachable`, details: checks },
    });
  });
  return router;
}
