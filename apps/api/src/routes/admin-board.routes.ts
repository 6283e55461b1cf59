import { timingSafeEqual } from 'node:crypto';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Router, type RequestHandler } from 'express';
import type { ApiContext } from '../context';

export const BOARD_PATH = '/admin/queues';

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** HTTP basic auth in front of the board and its static files. */
function basicAuth(user: string, password: string): RequestHandler {
  return (req, res, next) => {
    const header = req.headers.authorization ?? '';
    const [scheme, encoded] = header.split(' ');
    if (scheme === 'Basic' && encoded) {
      const decoded = Buffer.from(encoded, 'base64').toString();
      const i = decoded.indexOf(':');
      if (i >= 0 && same(decoded.slice(0, i), user) && same(decoded.slice(i + 1), password)) return next();
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
