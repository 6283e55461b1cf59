import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Queue } from 'bullmq';
import { and, eq, sql } from 'drizzle-orm';
import type { Db } from './db/client';
import { audioGenerationBatches, books, webhookDeliveries, webhookEndpoints } from './db/schema';
import type { ProgressEvent } from './events';
import { jobId, jobOptions, QUEUE, type JobTuning } from './queues';

export const webhookEventTypes = [
  'batch.completed',
  'batch.partial_success',
  'batch.failed',
  'batch.cancelled',
  'track.failed',
  'book.ready',
  'book.failed',
] as const;
export type WebhookEventType = (typeof webhookEventTypes)[number];

/**
 * The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`. The
 * timestamp is signed too, so a captured delivery cannot be replayed later.
 */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
  return `t=${timestamp},v1=${mac}`;
}

/** The README's verification recipe, as code: checks the MAC and the timestamp's age. */
export function verifyWebhook(secret: string, header: string, body: string, toleranceSeconds = 300, now = Date.now()): boolean {
  const parts = Object.fromEntries(header.split(',').map((p) => p.split('=', 2) as [string, string]));
  const t = Number(parts.t);
  if (!Number.isFinite(t) || !parts.v1 || Math.abs(now / 1000 - t) > toleranceSeconds) return false;
  const expected = Buffer.from(signWebhook(secret, t, body).split('v1=')[1]!, 'hex');
  const given = Buffer.from(parts.v1, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function isPrivateAddress(address: string): boolean {
  if (isIP(address) === 4) {
    const [a = 0, b = 0] = address.split('.').map(Number);
    return a === 10 || a === 127 || a === 0 || (a === 169 && b === 254) || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127) || a >= 224;
  }
  const lower = address.toLowerCase();
  if (lower.startsWith('::ffff:')) return isPrivateAddress(lower.slice(7));
  return lower === '::1' || lower === '::' || lower.startsWith('fe80') || lower.startsWith('fc') || lower.startsWith('fd') || lower.startsWith('ff');
}

/**
 * Refuses URLs that resolve to loopback, private or link-local addresses (someone else's
 * internal services), unless WEBHOOK_ALLOW_PRIVATE. Checked when registering and again
 * before every delivery, since DNS can change in between.
 */
export async function checkWebhookUrl(url: string, allowPrivate: boolean): Promise<string | null> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'url must be an absolute http(s) URL';
  }
  if (!['http:', 'https:'].includes(parsed.protocol)) return 'url must use http or https';
  if (parsed.username || parsed.password) return 'url must not contain credentials';
  if (allowPrivate) return null;
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
  } catch {
    return `url host ${host} does not resolve`;
  }
  const blocked = addresses.find(isPrivateAddress);
  return blocked ? `url resolves to a loopback, private or link-local address (${blocked}); refused` : null;
}

async function ownerOf(db: Db, event: ProgressEvent): Promise<string | undefined> {
  if (event.subject.kind === 'batch') {
    const [row] = await db.select({ userId: audioGenerationBatches.userId }).from(audioGenerationBatches).where(eq(audioGenerationBatches.id, event.subject.id));
    return row?.userId;
  }
  const [row] = await db.select({ userId: books.userId }).from(books).where(eq(books.id, event.subject.id));
  return row?.userId;
}

/**
 * Creates one delivery per subscribed endpoint for each webhook-worthy event and enqueues
 * it. The event id is made here once and sent on every attempt, so receivers can dedupe.
 */
export async function dispatchWebhooks(db: Db, queue: Queue, tuning: JobTuning, events: ProgressEvent[]): Promise<number> {
  let created = 0;
  for (const event of events) {
    if (!(webhookEventTypes as readonly string[]).includes(event.type)) continue;
    const userId = await ownerOf(db, event);
    if (!userId) continue;
    const endpoints = await db
      .select()
      .from(webhookEndpoints)
      .where(and(eq(webhookEndpoints.userId, userId), sql`${webhookEndpoints.events} @> ${JSON.stringify([event.type])}::jsonb`));
    if (endpoints.length === 0) continue;
    const eventId = `evt_${randomUUID().replace(/-/g, '')}`;
    const payload = {
      id: eventId,
      type: event.type,
      created_at: new Date().toISOString(),
      data: { [event.subject.kind === 'batch' ? 'batch_id' : 'book_id']: event.subject.id, ...event.data },
    };
    for (const endpoint of endpoints) {
      const [delivery] = await db
        .insert(webhookDeliveries)
        .values({ endpointId: endpoint.id, eventId, eventType: event.type, payload })
        .returning({ id: webhookDeliveries.id });
      await queue.add('deliver', { deliveryId: delivery!.id }, { ...jobOptions(QUEUE.webhooks, tuning), jobId: jobId.webhook(delivery!.id) });
      created++;
    }
  }
  return created;
}
