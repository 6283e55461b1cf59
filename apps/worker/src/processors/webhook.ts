import { eq, sql } from 'drizzle-orm';
import { UnrecoverableError } from 'bullmq';
import { webhookDeliveries, webhookEndpoints, type WebhookAttempt } from '@soundqueue/shared/db/schema';
import { parsePayload } from '@soundqueue/shared/queues';
import { signWebhook } from '@soundqueue/shared/webhooks';
import type { WorkerContext } from '../context';
import type { JobRun } from '../job-failure';
import { sendWebhook } from '../webhook-request';

/** One delivery attempt of one event to one endpoint; every attempt is recorded. */
export async function processWebhook(ctx: WorkerContext, run: JobRun): Promise<{ status: number } | { skipped: string }> {
  const { deliveryId } = parsePayload('webhooks', run.job.data);
  const [row] = await ctx.db
    .select({ delivery: webhookDeliveries, endpoint: webhookEndpoints })
    .from(webhookDeliveries)
    .innerJoin(webhookEndpoints, eq(webhookEndpoints.id, webhookDeliveries.endpointId))
    .where(eq(webhookDeliveries.id, deliveryId));
  if (!row) return { skipped: 'endpoint deleted' };
  const { delivery, endpoint } = row;
  if (delivery.status === 'delivered') return { skipped: 'already delivered' };
  const attempt = run.job.attemptsMade + 1;
  const last = attempt >= (run.job.opts.attempts ?? 1);
  const record = async (fields: { statusCode: number | null; latencyMs: number; error: string | null; status: 'pending' | 'delivered' | 'failed' }) => {
    const entry: WebhookAttempt = { attempt, at: new Date().toISOString(), status_code: fields.statusCode, latency_ms: fields.latencyMs, error: fields.error };
    await ctx.db
      .update(webhookDeliveries)
      .set({
        attempts: sql`${webhookDeliveries.attempts} + 1`,
        lastStatusCode: fields.statusCode,
        lastLatencyMs: fields.latencyMs,
        lastError: fields.error,
        attemptLog: sql`${webhookDeliveries.attemptLog} || ${JSON.stringify([entry])}::jsonb`,
        status: fields.status,
        deliveredAt: fields.status === 'delivered' ? sql`now()` : null,
        updatedAt: sql`now()`,
      })
      .where(eq(webhookDeliveries.id, deliveryId));
  };

  const body = JSON.stringify(delivery.payload);
  const timestamp = Math.floor(Date.now() / 1000);
  const started = Date.now();
  // Checked again at every delivery (DNS can change after registration), on the very
  // addresses the request then connects to: see webhook-request.ts.
  const outcome = await sendWebhook({
    url: endpoint.url,
    allowPrivate: ctx.config.WEBHOOK_ALLOW_PRIVATE,
    timeoutMs: ctx.config.WEBHOOK_TIMEOUT_MS,
    resolve: ctx.resolveHost,
    headers: {
      'Content-Type': 'application/json',
      'User-Agent': 'soundqueue-webhooks/1',
      'Soundqueue-Event-Id': delivery.eventId,
      'Soundqueue-Event-Type': delivery.eventType,
      'Soundqueue-Delivery-Attempt': String(attempt),
      'Soundqueue-Signature': signWebhook(endpoint.secret, timestamp, body),
    },
    body,
  });
  if ('refused' in outcome) {
    await record({ statusCode: null, latencyMs: 0, error: outcome.refused, status: 'failed' });
    throw new UnrecoverableError(outcome.refused);
  }
  const { statusCode, error } = outcome;
  const latencyMs = Date.now() - started;
  if (!error) {
    await record({ statusCode, latencyMs, error: null, status: 'delivered' });
    return { status: statusCode! };
  }
  await record({ statusCode, latencyMs, error, status: last ? 'failed' : 'pending' });
  throw new Error(error);
}
