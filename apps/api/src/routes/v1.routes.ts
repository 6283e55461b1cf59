import express, { Router } from 'express';
import { MAX_BATCH_BODY_BYTES } from '../batches/batch-request';
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
  // Mounted before the JSON parser below: books take uploads and larger bodies.
  router.use(bookRoutes(ctx));
  // A new batch's body may be larger than 1 MiB and valid (14 sections of 20,000 characters,
  // each escaped as \uXXXX, are 1.7 MB): its own parser is sized for the largest valid one,
  // and the parser after it leaves a body already parsed alone.
  router.post('/audio/batches', express.json({ limit: MAX_BATCH_BODY_BYTES, strict: true }));
  // 1 MiB covers every other route's body with room to spare.
  router.use(express.json({ limit: '1mb', strict: true }));
  router.use(batchRoutes(ctx));
  router.use(playbackRoutes(ctx));
  router.use(webhookRoutes(ctx));
  router.use(adminRoutes(ctx));
  return router;
}
