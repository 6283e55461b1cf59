import { eq, sql } from 'drizzle-orm';
import { UnrecoverableError } from 'bullmq';
import { webhookDeliveries, webhookEndpoints } from '@soundqueue/shared/db/schema';
import { parsePayload } from '@soundqueue/shared/queues';
import { checkWebhookUrl, signWebhook } from '@soundqueue/shared/webhooks';
import type { WorkerContext } from '../context';
import type { JobRun } from '../job-failure';

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
    await ctx.db
      .update(webhookDeliveries)
      .set({
        attempts: sql`${webhookDeliveries.attempts} + 1`,
        lastStatusCode: fields.statusCode,
        lastLatencyMs: fields.latencyMs,
        lastError: fields.error,
        status: fields.status,
        deliveredAt: fields.status === 'delivered' ? sql`now()` : null,
        updatedAt: sql`now()`,
      })
      .where(eq(webhookDeliveries.id, deliveryId));
  };

  const refused = await checkWebhookUrl(endpoint.url, ctx.config.WEBHOOK_ALLOW_PRIVATE);
  if (refused) {
    await record({ statusCode: null, latencyMs: 0, error: refused, status: 'failed' });
    throw new UnrecoverableError(refused);
  }
  const body = JSON.stringify(delivery.payload);
  const timestamp = Math.floor(Date.now() / 1000);
  const started = Date.now();
  let statusCode: number | null = null;
  let error: string | null = null;
  try {
    const response = await fetch(endpoint.url, {
      method: 'POST',
      redirect: 'manual',
      signal: AbortSignal.timeout(ctx.config.WEBHOOK_TIMEOUT_MS),
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
    statusCode = response.status;
    await response.body?.cancel();
    if (response.status < 200 || response.status >= 300) error = `endpoint answered ${response.status}`;
  } catch (e) {
    error = `request failed: ${(e as Error).message}`;
  }
  const latencyMs = Date.now() - started;
  if (!error) {
    await record({ statusCode, latencyMs, error: null, status: 'delivered' });
    return { status: statusCode! };
  }
  await record({ statusCode, latencyMs, error, status: last ? 'failed' : 'pending' });
  throw new Error(error);
}
