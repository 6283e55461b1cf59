import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Router, type Response } from 'express';

// The status page: three static files (no build step) served outside /v1 and outside auth.
// The page itself holds no data; it calls /v1 with the token the user pastes into it.

const dir = fileURLToPath(new URL('../status-page/', import.meta.url));

const files = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'styles.css': 'text/css; charset=utf-8',
} as const;
type FileName = keyof typeof files;

// Same-origin only: no CDN, no inline script; audio streams from this API's playback URLs
// (POST /v1/playback-urls), so media needs no blob: source either.
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "media-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

async function send(res: Response, name: FileName): Promise<void> {
  // Read per request (they are a few kB): an edited page shows on reload, no restart.
  const body = await readFile(dir + name);
  res.setHeader('Content-Type', files[name]);
  // Short: a deploy reaches browsers within a minute; the ETag makes revalidation a 304.
  res.setHeader('Cache-Control', 'public, max-age=60');
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  if (name === 'index.html') res.setHeader('Content-Security-Policy', CONTENT_SECURITY_POLICY);
  res.send(body);
}

/** `/` is the page; its assets live under `/status-page/`. */
export function statusPageRoutes(): Router {
  const router = Router();
  router.get('/', (_req, res) => send(res, 'index.html'));
  router.get('/status-page/:file', async (req, res, next) => {
    const name = req.params.file;
    // Only the listed files: the URL never names a path on disk.
    if (!Object.hasOwn(files, name)) return next();
    await send(res, name as FileName);
  });
  return router;
}
