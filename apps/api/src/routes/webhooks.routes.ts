import { randomBytes } from 'node:crypto';
import { and, desc, eq, type SQL } from 'drizzle-orm';
import { Router } from 'express';
import { z } from 'zod';
import { webhookDeliveries, webhookEndpoints } from '@soundqueue/shared/db/schema';
import { checkWebhookUrl, webhookEventTypes } from '@soundqueue/shared/webhooks';
import type { ApiContext } from '../context';
import { HttpError, requireJson, validate } from '../http-errors';
import { afterCursor, cursorTime, pageLimit, pageOf, parseId } from '../ids';

export const createWebhookSchema = z
  .object({
    url: z.string().max(2000, 'must be at most 2000 characters'),
    events: z
      .array(z.enum(webhookEventTypes, { message: `must be one of ${webhookEventTypes.join(', ')}` }))
      .min(1, 'subscribe to at least one event'),
  })
  .strict();

// Newest first, as the batch and book lists page (100 by default: what the listing showed
// before it paged).
export const deliveriesQuery = z.object({
  limit: pageLimit(100, 100),
  cursor: z.string().max(200).optional(),
});

type Endpoint = typeof webhookEndpoints.$inferSelect;
const view = (e: Endpoint, withSecret = false) => ({
  id: e.id,
  url: e.url,
  events: e.events,
  ...(withSecret ? { secret: e.secret } : {}),
  created_at: e.createdAt,
});

export function webhookRoutes(ctx: ApiContext): Router {
  const router = Router();
  const userOf = (req: { principal?: { userId: string } }) => req.principal!.userId;

  router.post('/webhooks', requireJson, async (req, res) => {
    const body = validate(createWebhookSchema, req.body);
    const refused = await checkWebhookUrl(body.url, ctx.config.WEBHOOK_ALLOW_PRIVATE);
    if (refused) throw new HttpError(400, 'validation_failed', `body.url: ${refused}`, [{ path: 'body.url', message: refused }]);
    // Stored (and shown) as URL parsing reads it, which is where deliveries go: surrounding
    // spaces and tabs or newlines inside are dropped, the scheme and host lowercased, and so on.
    const url = new URL(body.url).href;
    const [endpoint] = await ctx.db
      .insert(webhookEndpoints)
      .values({ userId: userOf(req), url, events: [...new Set(body.events)], secret: `whsec_${randomBytes(24).toString('base64url')}` })
      .returning();
    // The secret is shown once, here; store it to verify signatures.
    res.status(201).json(view(endpoint!, true));
  });

  router.get('/webhooks', async (req, res) => {
    const rows = await ctx.db.select().from(webhookEndpoints).where(eq(webhookEndpoints.userId, userOf(req))).orderBy(desc(webhookEndpoints.createdAt));
    res.json({ webhooks: rows.map((e) => view(e)) });
  });

  const owned = async (userId: string, id: string) => {
    const [endpoint] = await ctx.db.select().from(webhookEndpoints).where(and(eq(webhookEndpoints.id, id), eq(webhookEndpoints.userId, userId)));
    if (!endpoint) throw new HttpError(404, 'not_found', 'webhook not found');
    return endpoint;
  };

  router.get('/webhooks/:id', async (req, res) => {
    res.json(view(await owned(userOf(req), parseId(req.params.id, 'webhook'))));
  });

  router.get('/webhooks/:id/deliveries', async (req, res) => {
    const endpoint = await owned(userOf(req), parseId(req.params.id, 'webhook'));
    const query = validate(deliveriesQuery, req.query, 'query');
    const conditions: SQL[] = [eq(webhookDeliveries.endpointId, endpoint.id)];
    if (query.cursor) conditions.push(afterCursor(webhookDeliveries.createdAt, webhookDeliveries.id, query.cursor));
    const rows = await ctx.db
      .select({ d: webhookDeliveries, cursorAt: cursorTime(webhookDeliveries.createdAt) })
      .from(webhookDeliveries)
      .where(and(...conditions))
      .orderBy(desc(webhookDeliveries.createdAt), desc(webhookDeliveries.id))
      .limit(query.limit + 1);
    const { page, nextCursor } = pageOf(rows, query.limit, (r) => r.d.id);
    res.json({
      next_cursor: nextCursor,
      deliveries: page.map(({ d }) => ({
        id: d.id,
        event_id: d.eventId,
        event_type: d.eventType,
        status: d.status,
        attempts: d.attempts,
        last_status_code: d.lastStatusCode,
        last_latency_ms: d.lastLatencyMs,
        last_error: d.lastError,
        attempt_log: d.attemptLog,
        delivered_at: d.deliveredAt,
        created_at: d.createdAt,
      })),
    });
  });

  router.delete('/webhooks/:id', async (req, res) => {
    const endpoint = await owned(userOf(req), parseId(req.params.id, 'webhook'));
    await ctx.db.delete(webhookEndpoints).where(eq(webhookEndpoints.id, endpoint.id));
    res.status(204).end();
  });

  return router;
}
