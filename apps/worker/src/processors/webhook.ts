import { and, eq, gte, lt, or, sql } from 'drizzle-orm';
import { UnrecoverableError } from 'bullmq';
import { webhookDeliveries, webhookEndpoints, type WebhookAttempt } from '@soundqueue/shared/db/schema';
import { parsePayload } from '@soundqueue/shared/queues';
import { signWebhook } from '@soundqueue/shared/webhooks';
import type { WorkerContext } from '../context';
import type { JobRun } from '../job-failure';
import { sendWebhook } from '../webhook-request';

/**
 * One delivery attempt of one event to one endpoint; every attempt is recorded.
 *
 * The delivery's row holds its attempt budget, not the job: the attempt is counted in the row
 * before its request is sent, and its number is the row's count. A delivery queued again (the
 * reconciler queues a pending delivery that has no job) continues from that count, so a
 * receiver gets at most WEBHOOK_ATTEMPTS requests however often the delivery is queued: before,
 * a last attempt that could not record its outcome left the delivery pending, and its next job
 * made every attempt again. An attempt that cannot be counted is not sent, and the delivery
 * stays pending for the job's next attempt or the reconciler. An attempt's outcome is recorded
 * only on a delivery still pending (takesOutcome): another run of the same delivery may have
 * ended it meanwhile, and then this run changes nothing and ends without a retry. While both
 * runs leave it pending, their outcomes can come in either order: the log is kept in attempt
 * order and last_* describe the newest attempt whose outcome is known (newestKnown).
 */
export async function processWebhook(ctx: WorkerContext, run: JobRun): Promise<{ status: number } | { skipped: string }> {
  const { deliveryId } = parsePayload('webhooks', run.job.data);
  const [row] = await ctx.db
    .select({ delivery: webhookDeliveries, endpoint: webhookEndpoints })
    .from(webhookDeliveries)
    .innerJoin(webhookEndpoints, eq(webhookEndpoints.id, webhookDeliveries.endpointId))
    .where(eq(webhookDeliveries.id, deliveryId));
  if (!row) return { skipped: 'endpoint deleted' };
  const { delivery, endpoint } = row;
  if (delivery.status !== 'pending') return { skipped: `already ${delivery.status}` };
  const budget = ctx.config.WEBHOOK_ATTEMPTS;
  const attempt = await countAttempt(ctx, deliveryId, budget);
  if (attempt === null) {
    // Every attempt was made (the last one's outcome could not be recorded, or its worker
    // stopped before recording it), or the delivery settled meanwhile.
    if (await exhaust(ctx, deliveryId, budget)) throw new UnrecoverableError(exhaustedMessage(budget));
    return { skipped: 'delivery settled meanwhile' };
  }
  const last = attempt >= budget;
  const record = async (fields: { statusCode: number | null; latencyMs: number; error: string | null; status: 'pending' | 'delivered' | 'failed' }) => {
    const entry: WebhookAttempt = { attempt, at: new Date().toISOString(), status_code: fields.statusCode, latency_ms: fields.latencyMs, error: fields.error };
    // The attempt is counted already (countAttempt): this records its outcome.
    // The success that delivers it is what last_* describe, whatever attempt it was: a
    // delivered delivery never shows a failure as its last answer.
    const newest = fields.status === 'delivered' ? sql`true` : newestKnown(attempt);
    const changed = await ctx.db
      .update(webhookDeliveries)
      .set({
        lastStatusCode: sql`case when ${newest} then ${fields.statusCode}::integer else ${webhookDeliveries.lastStatusCode} end`,
        lastLatencyMs: sql`case when ${newest} then ${fields.latencyMs}::integer else ${webhookDeliveries.lastLatencyMs} end`,
        lastError: sql`case when ${newest} then ${fields.error}::text else ${webhookDeliveries.lastError} end`,
        attemptLog: inAttemptOrder(entry),
        status: fields.status,
        deliveredAt: fields.status === 'delivered' ? sql`now()` : null,
        updatedAt: sql`now()`,
      })
      .where(and(eq(webhookDeliveries.id, deliveryId), takesOutcome(attempt)))
      .returning({ id: webhookDeliveries.id });
    if (changed.length > 0) return null;
    // Another run ended the delivery meanwhile: its outcome stands, and this job neither fails
    // nor retries for an attempt whose outcome no longer matters.
    const [current] = await ctx.db.select({ status: webhookDeliveries.status }).from(webhookDeliveries).where(eq(webhookDeliveries.id, deliveryId));
    const answered = fields.statusCode === null ? (fields.error ?? 'no answer') : `answered ${fields.statusCode}`;
    const skipped = `attempt ${attempt} ${answered}, not recorded: ${current ? `another run ended the delivery ${current.status}` : 'the delivery no longer exists'}`;
    ctx.logger.info({ deliveryId, attempt }, skipped);
    return { skipped };
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
    const unchanged = await record({ statusCode: null, latencyMs: 0, error: outcome.refused, status: 'failed' });
    if (unchanged) return unchanged;
    throw new UnrecoverableError(outcome.refused);
  }
  const { statusCode, error } = outcome;
  const latencyMs = Date.now() - started;
  if (!error) {
    const unchanged = await record({ statusCode, latencyMs, error: null, status: 'delivered' });
    return unchanged ?? { status: statusCode! };
  }
  const unchanged = await record({ statusCode, latencyMs, error, status: last ? 'failed' : 'pending' });
  if (unchanged) return unchanged;
  // The row's budget is spent, whatever the job's own count says (a job queued again).
  if (last) throw new UnrecoverableError(error);
  throw new Error(error);
}

/**
 * Whether a delivery takes the outcome of its attempt `attempt`: only while it is pending. A
 * duplicate run of the delivery (a stalled job run again while the first run still sends, a
 * job queued again beside a live one) may have ended it meanwhile, and a delivery ends once:
 * an earlier attempt's late 5xx must not turn `delivered` back into `pending` (and send it
 * again) or `failed`, nor log an attempt after the final one. The one exception is the
 * delivery's newest attempt on a delivery failed for want of that attempt's outcome (exhaust:
 * a duplicate run found every attempt counted while the last one was still under way): the
 * real outcome replaces the guess. Only the run that counted an attempt holds its number.
 */
function takesOutcome(attempt: number) {
  return or(
    eq(webhookDeliveries.status, 'pending'),
    and(
      eq(webhookDeliveries.status, 'failed'),
      eq(webhookDeliveries.attempts, attempt),
      sql`not ${webhookDeliveries.attemptLog} @> ${JSON.stringify([{ attempt }])}::jsonb`,
    ),
  );
}

/**
 * Whether attempt `attempt` is the newest whose outcome the row knows, so that the delivery's
 * last_* fields describe it: no attempt with a higher number is in the log. Two runs of one
 * delivery (see takesOutcome) can both record while it is pending, and an earlier attempt's
 * outcome can come after a later one's; it goes into the log but leaves last_* alone.
 */
function newestKnown(attempt: number) {
  return sql`not exists (select 1 from jsonb_array_elements(${webhookDeliveries.attemptLog}) as logged(entry) where (logged.entry->>'attempt')::integer > ${attempt}::integer)`;
}

/** The attempt log with `entry` added, ordered by attempt number whatever order outcomes came in. */
function inAttemptOrder(entry: WebhookAttempt) {
  return sql`(select jsonb_agg(logged.entry order by (logged.entry->>'attempt')::integer, logged.n) from jsonb_array_elements(${webhookDeliveries.attemptLog} || ${JSON.stringify([entry])}::jsonb) with ordinality as logged(entry, n))`;
}

/**
 * Counts one more attempt of a pending delivery that has attempts left, and returns its
 * number; null if it has none left or is no longer pending.
 */
async function countAttempt(ctx: WorkerContext, deliveryId: string, budget: number): Promise<number | null> {
  const [counted] = await ctx.db
    .update(webhookDeliveries)
    .set({ attempts: sql`${webhookDeliveries.attempts} + 1`, updatedAt: sql`now()` })
    .where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.status, 'pending'), lt(webhookDeliveries.attempts, budget)))
    .returning({ attempts: webhookDeliveries.attempts });
  return counted?.attempts ?? null;
}

const exhaustedMessage = (budget: number) => `all ${budget} attempts were made; the outcome of the last one was not recorded`;

/** Fails a pending delivery that has no attempts left. Whether it did. */
async function exhaust(ctx: WorkerContext, deliveryId: string, budget: number): Promise<boolean> {
  const failed = await ctx.db
    .update(webhookDeliveries)
    .set({ status: 'failed', lastError: exhaustedMessage(budget), updatedAt: sql`now()` })
    .where(and(eq(webhookDeliveries.id, deliveryId), eq(webhookDeliveries.status, 'pending'), gte(webhookDeliveries.attempts, budget)))
    .returning({ id: webhookDeliveries.id });
  return failed.length > 0;
}
