import { createServer, type Server } from 'node:http';
import { METRICS_CHALLENGE, METRICS_UNAUTHORIZED, metricsAccess } from '@soundqueue/shared/metrics-auth';
import { metricsRegistry } from '@soundqueue/shared/metrics';

/**
 * The path of a request target, or null when it is no URL: Node's HTTP parser passes targets
 * such as `//[` or `http://[` through, and new URL() throws on them. Thrown in the request
 * callback below, that was an unhandled rejection, which ends the worker process.
 */
function pathOf(target: string): string | null {
  try {
    return new URL(target, 'http://worker').pathname;
  } catch {
    return null;
  }
}

/**
 * A worker serves no routes, only its own metrics for Prometheus (WORKER_METRICS_PORT), behind
 * the same METRICS_TOKEN as the API's /metrics: a port opened for scraping is often reachable
 * from more than the monitoring network.
 */
export function createMetricsServer(token: string | undefined): Server {
  const allowed = metricsAccess(token);
  return createServer(async (req, res) => {
    // By path: a scrape configured with params sends a query string.
    if (pathOf(req.url ?? '/') !== '/metrics') {
      res.statusCode = 404;
      res.end();
      return;
    }
    if (!allowed(req.headers.authorization)) {
      res.writeHead(401, { 'Content-Type': 'application/json; charset=utf-8', 'WWW-Authenticate': METRICS_CHALLENGE });
      res.end(JSON.stringify(METRICS_UNAUTHORIZED));
      return;
    }
    // Awaited inside a request callback nobody awaits: a collector that throws would be an
    // unhandled rejection, which ends the worker process, jobs and all. A failed scrape is a 500.
    let body: string;
    try {
      body = await metricsRegistry.metrics();
    } catch (error) {
      res.writeHead(500, { 'Content-Type': 'application/json; charset=utf-8' });
      res.end(JSON.stringify({ error: { code: 'metrics_unavailable', message: error instanceof Error ? error.message : String(error), details: null } }));
      return;
    }
    res.setHeader('Content-Type', metricsRegistry.contentType);
    res.end(body);
  });
}
