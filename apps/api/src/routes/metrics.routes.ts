import { Router } from 'express';
import { metricsRegistry } from '@soundqueue/shared/metrics';

/** Prometheus scrape endpoint; expose it to your monitoring network only. */
export function metricsRoutes(): Router {
  const router = Router();
  router.get('/metrics', async (_req, res) => {
    res.setHeader('Content-Type', metricsRegistry.contentType);
    res.send(await metricsRegistry.metrics());
  });
  return router;
}
