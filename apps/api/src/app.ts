import express, { type Express } from 'express';
import type { ApiContext } from './context';
import { errorHandler, unknownRoute } from './http-errors';
import { adminBoardRoutes } from './routes/admin-board.routes';
import { docsRoutes } from './routes/docs.routes';
import { healthRoutes } from './routes/health.routes';
import { metricsRoutes } from './routes/metrics.routes';
import { statusPageRoutes } from './routes/status-page.routes';
import { v1Routes } from './routes/v1.routes';

export type { ApiContext } from './context';
export { createApiContext } from './context';
export { serve, type Listening } from './serve';

/** The Express app, without listening: tests drive it on a random port. */
export function createApp(ctx: ApiContext): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', true);
  app.set('query parser', 'simple');
  app.use(healthRoutes(ctx));
  app.use(metricsRoutes(ctx.config.METRICS_TOKEN));
  app.use(docsRoutes());
  const board = adminBoardRoutes(ctx);
  if (board) app.use(board);
  app.use(statusPageRoutes());
  app.use('/v1', ctx.auth.middleware, v1Routes(ctx));
  app.use(unknownRoute);
  app.use(errorHandler(ctx.logger));
  return app;
}
