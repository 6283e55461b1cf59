import { Router } from 'express';
import { METRICS_CHALLENGE, METRICS_UNAUTHORIZED, metricsAccess } from '@soundqueue/shared/metrics-auth';
import { metricsRegistry } from '@soundqueue/shared/metrics';

/**
 * Prometheus scrape endpoint. It sits on the public port, so with METRICS_TOKEN set it wants
 * that bearer token; unset, it answers anyone (the monitoring network only, then).
 */
export function metricsRoutes(token: string | undefined): Router {
  const router = Router();
  const allowed = metricsAccess(token);
  router.get('/metrics', async (req, res) => {
    if (!allowed(req.headers.authorization)) {
      res.setHeader('WWW-Authenticate', METRICS_CHALLENGE);
      res.status(401).json(METRICS_UNAUTHORIZED);
      return;
    }
    res.setHeader('Content-Type', metricsRegistry.contentType);
    res.send(await metricsRegistry.metrics());
  });
  return router;
}
