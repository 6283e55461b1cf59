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
  // Readiness: both stores answer; a 503 names the one that does not.
  router.get('/readyz', async (_req, res) => {
    const [redis, postgres] = await Promise.allSettled([
      withTimeout(ctx.redis.ping(), 2_000),
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
