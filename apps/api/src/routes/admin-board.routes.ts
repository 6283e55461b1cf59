import { createHash, timingSafeEqual } from 'node:crypto';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Router, type RequestHandler } from 'express';
import type { ApiContext } from '../context';

export const BOARD_PATH = '/admin/queues';

// Compared as SHA-256 digests, both always: neither the length of the secret nor which of
// the two was wrong shows in the time an answer takes.
const digest = (value: string) => createHash('sha256').update(value).digest();

/** HTTP basic auth in front of the board and its static files. */
function basicAuth(user: string, password: string): RequestHandler {
  const userDigest = digest(user);
  const passwordDigest = digest(password);
  return (req, res, next) => {
    const match = /^basic\s+(\S+)$/i.exec(req.headers.authorization ?? ''); // the scheme is case-insensitive (RFC 7617)
    if (match) {
      const decoded = Buffer.from(match[1]!, 'base64').toString();
      const i = decoded.indexOf(':');
      const userOk = timingSafeEqual(digest(i >= 0 ? decoded.slice(0, i) : ''), userDigest);
      const passwordOk = timingSafeEqual(digest(i >= 0 ? decoded.slice(i + 1) : ''), passwordDigest);
      if (i >= 0 && userOk && passwordOk) return next();
    }
    res.setHeader('WWW-Authenticate', 'Basic realm="soundqueue admin", charset="UTF-8"');
    res.status(401).json({ error: { code: 'unauthorized', message: 'admin credentials required', details: null } });
  };
}

/**
 * Bull Board over every queue at /admin/queues, behind ADMIN_USER / ADMIN_PASSWORD; not
 * mounted at all when they are unset. Read-only unless ADMIN_READONLY=false.
 */
export function adminBoardRoutes(ctx: ApiContext): Router | null {
  const { ADMIN_USER: user, ADMIN_PASSWORD: password, ADMIN_READONLY: readOnlyMode } = ctx.config;
  if (!user || !password) return null;
  const adapter = new ExpressAdapter();
  adapter.setBasePath(BOARD_PATH);
  createBullBoard({
    queues: Object.values(ctx.queues).map((queue) => new BullMQAdapter(queue, { readOnlyMode })),
    serverAdapter: adapter,
    options: { uiConfig: { boardTitle: 'soundqueue' } },
  });
  const router = Router();
  router.use(BOARD_PATH, basicAuth(user, password), adapter.getRouter());
  return router;
}
