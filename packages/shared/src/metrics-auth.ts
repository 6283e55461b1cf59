import { createHash, timingSafeEqual } from 'node:crypto';

// Who may scrape /metrics: the API's (on its public port) and a worker's (WORKER_METRICS_PORT)
// answer the same way, so Prometheus needs one scrape setting for both.

/** The challenge a refused scrape carries (RFC 6750), telling the scraper which scheme to use. */
export const METRICS_CHALLENGE = 'Bearer realm="soundqueue metrics"';

/** The body of a refused scrape: the API's one error shape, from either process. */
export const METRICS_UNAUTHORIZED = {
  error: { code: 'unauthorized', message: 'metrics require Authorization: Bearer <METRICS_TOKEN>', details: null },
} as const;

// Compared as SHA-256 digests: equal lengths whatever was sent, so timingSafeEqual never
// throws and the answer's timing says nothing about the token's length or its first bytes.
const digest = (value: string) => createHash('sha256').update(value).digest();

/**
 * Whether a request's Authorization header may read /metrics. With no token configured every
 * scrape is allowed (the endpoint is then for a monitoring network only). The scheme is
 * case-insensitive (RFC 9110).
 */
export function metricsAccess(token: string | undefined): (authorization: string | undefined) => boolean {
  if (token === undefined) return () => true;
  const expected = digest(token);
  return (authorization) => {
    const match = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization ?? '');
    return timingSafeEqual(digest(match?.[1] ?? ''), expected) && match !== null;
  };
}
