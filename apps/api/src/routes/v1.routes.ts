import express, { Router } from 'express';
import type { ApiContext } from '../context';
import { adminRoutes } from './admin.routes';
import { batchRoutes } from './batches.routes';
import { bookRoutes } from './books.routes';
import { catalogRoutes } from './catalog.routes';
import { eventRoutes } from './events.routes';
import { playbackRoutes } from './playback.routes';
import { webhookRoutes } from './webhooks.routes';

export function v1Routes(ctx: ApiContext): Router {
  const router = Router();
  router.use(catalogRoutes());
  router.use(eventRoutes(ctx));
  // Mounted before the 1 MiB JSON parser: books take uploads and larger bodies.
  router.use(bookRoutes(ctx));
  // 1 MiB covers 14 sections of 20,000 characters of multi-byte text with room to spare.
  router.use(express.json({ limit: '1mb', strict: true }));
  router.use(batchRoutes(ctx));
  router.use(playbackRoutes(ctx));
  router.use(webhookRoutes(ctx));
  router.use(adminRoutes(ctx));
  return router;
}
