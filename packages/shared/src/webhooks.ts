import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import type { Queue } from 'bullmq';
import { and, eq, sql } from 'drizzle-orm';
import type { Db, Tx } from './db/client';
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

// Where a webhook must never go: loopback, "this network", private (RFC 1918), carrier-grade
// NAT, link-local (cloud metadata at 169.254.169.254), multicast and reserved; and the special
// ranges that are internal in practice: IETF protocol assignments (192.0.0.0/24: DS-Lite,
// NAT64 discovery) and benchmarking (198.18.0.0/15, used inside some networks). Documentation
// ranges (TEST-NET) are not routed anywhere: a delivery there fails on its own.
const blockedIPv4 = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12], ['192.168.0.0', 16], ['224.0.0.0', 3],
  ['192.0.0.0', 24], ['198.18.0.0', 15],
] as const) {
  blockedIPv4.addSubnet(network, prefix, 'ipv4');
}
// The IPv6 equivalents: unspecified, loopback, link-local, site-local (deprecated but still
// routed inside some networks), unique local, multicast, local-use NAT64 (RFC 8215) and
// benchmarking; and Teredo (2001::/32), a tunnel whose addresses carry an IPv4 server and an
// obfuscated IPv4 client: no webhook host is one.
const blockedIPv6 = new BlockList();
for (const [network, prefix] of [
  ['::', 128], ['::1', 128], ['fe80::', 10], ['fec0::', 10], ['fc00::', 7], ['ff00::', 8], ['64:ff9b:1::', 48],
  ['2001:2::', 48], ['2001::', 32],
] as const) {
  blockedIPv6.addSubnet(network, prefix, 'ipv6');
}
// IPv6 addresses that carry an IPv4 address in their last 32 bits and reach that IPv4 host:
// IPv4-mapped (::ffff:127.0.0.1, which URL parsing rewrites to ::ffff:7f00:1 and Node's fetch
// connects to 127.0.0.1 with), IPv4-compatible (::127.0.0.1), IPv4-translated (::ffff:0:0:0/96)
// and well-known NAT64 (64:ff9b::/96): translators forward them to the IPv4 address inside.
const embedsIPv4 = new BlockList();
for (const [network, prefix] of [['::ffff:0:0', 96], ['::', 96], ['::ffff:0:0:0', 96], ['64:ff9b::', 96]] as const) {
  embedsIPv4.addSubnet(network, prefix, 'ipv6');
}
// 6to4 (2002::/16) carries its IPv4 gateway in bits 16-47 (2002:7f00:1::/48 is 127.0.0.1's).
const sixToFour = new BlockList();
sixToFour.addSubnet('2002::', 16, 'ipv6');

/** The eight 16-bit groups of an IPv6 address, whether written with dotted IPv4 or in hex. */
function groupsOf(ipv6: string): number[] {
  // URL parsing writes any IPv6 address in its canonical form: hex groups, at most one "::".
  const canonical = new URL(`http://[${ipv6}]/`).hostname.slice(1, -1);
  const [head = '', tail] = canonical.split('::');
  const front = head ? head.split(':') : [];
  const back = tail ? tail.split(':') : [];
  const groups = tail === undefined ? front : [...front, ...Array<string>(8 - front.length - back.length).fill('0'), ...back];
  return groups.map((g) => parseInt(g, 16));
}

/** The IPv4 address two 16-bit groups hold. */
const ipv4Of = (high: number, low: number) => [high >> 8, high & 255, low >> 8, low & 255].join('.');

function isPrivateAddress(address: string): boolean {
  // A zone id (fe80::1%eth0) names an interface, not a host; what matters is the address.
  const bare = address.split('%')[0]!;
  try {
    if (isIP(bare) === 4) return blockedIPv4.check(bare, 'ipv4');
    if (isIP(bare) !== 6) return true;
    if (embedsIPv4.check(bare, 'ipv6')) {
      const groups = groupsOf(bare);
      return blockedIPv4.check(ipv4Of(groups[6]!, groups[7]!), 'ipv4');
    }
    if (sixToFour.check(bare, 'ipv6')) {
      const groups = groupsOf(bare);
      return blockedIPv4.check(ipv4Of(groups[1]!, groups[2]!), 'ipv4');
    }
    return blockedIPv6.check(bare, 'ipv6');
  } catch {
    // Whatever cannot be read as an address is not delivered to.
    return true;
  }
}

/** The URL, or why it can never be a webhook endpoint (no DNS is involved). */
export function parseWebhookUrl(url: string): URL | string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'url must be an absolute http(s) URL';
  }
  if (!['http:', 'https:'].includes(parsed.protocol)) return 'url must use http or https';
  if (parsed.username || parsed.password) return 'url must not contain credentials';
  // Nothing listens on port 0: such an endpoint could never be delivered to.
  if (parsed.port === '0') return 'url must not use port 0';
  return parsed;
}

/** The refusal for a host whose addresses include a loopback, private or link-local one. */
export function refuseInternalAddresses(addresses: string[]): string | null {
  const blocked = addresses.find(isPrivateAddress);
  return blocked ? `url resolves to a loopback, private or link-local address (${blocked}); refused` : null;
}

/**
 * Refuses URLs that resolve to loopback, private or link-local addresses (someone else's
 * internal services), unless WEBHOOK_ALLOW_PRIVATE. Checked when registering. Deliveries do
 * not use this: they resolve once, check, and connect to exactly the checked addresses
 * (apps/worker/src/webhook-request.ts), as a second resolution could answer differently.
 */
export async function checkWebhookUrl(url: string, allowPrivate: boolean): Promise<string | null> {
  const parsed = parseWebhookUrl(url);
  if (typeof parsed === 'string') return parsed;
  if (allowPrivate) return null;
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
  } catch {
    return `url host ${host} does not resolve`;
  }
  return refuseInternalAddresses(addresses);
}

async function ownerOf(db: Db | Tx, event: ProgressEvent): Promise<string | undefined> {
  if (event.subject.kind === 'batch') {
    const [row] = await db.select({ userId: audioGenerationBatches.userId }).from(audioGenerationBatches).where(eq(audioGenerationBatches.id, event.subject.id));
    return row?.userId;
  }
  const [row] = await db.select({ userId: books.userId }).from(books).where(eq(books.id, event.subject.id));
  return row?.userId;
}

const isWebhookEvent = (event: ProgressEvent) => (webhookEventTypes as readonly string[]).includes(event.type);

/**
 * Records one delivery per subscribed endpoint for each webhook-worthy event, and returns
 * their ids. The event id is made here once and sent on every attempt, so receivers can
 * dedupe. `db` may be the transaction of the change the events announce (see
 * recordWebhooksIn): then the deliveries exist exactly when the change does.
 */
export async function recordWebhookDeliveries(db: Db | Tx, events: ProgressEvent[]): Promise<string[]> {
  const ids: string[] = [];
  for (const event of events) {
    if (!isWebhookEvent(event)) continue;
    const userId = await ownerOf(db, event);
    if (!userId) continue;
    // FOR KEY SHARE: an endpoint deleted (DELETE /v1/webhooks/:id) between this read and the
    // insert below broke the deliveries' foreign key, and the change the events announce (a
    // cancel, a track's failure, a batch's end) was rolled back with them. Locked, a delete
    // waits for this transaction and then removes its deliveries with the endpoint; one
    // committed before the read is not seen.
    const endpoints = await db
      .select({ id: webhookEndpoints.id })
      .from(webhookEndpoints)
      .where(and(eq(webhookEndpoints.userId, userId), sql`${webhookEndpoints.events} @> ${JSON.stringify([event.type])}::jsonb`))
      .for('key share');
    if (endpoints.length === 0) continue;
    const eventId = `evt_${randomUUID().replace(/-/g, '')}`;
    const payload = {
      id: eventId,
      type: event.type,
      created_at: new Date().toISOString(),
      data: { [event.subject.kind === 'batch' ? 'batch_id' : 'book_id']: event.subject.id, ...event.data },
    };
    const rows = await db
      .insert(webhookDeliveries)
      .values(endpoints.map((endpoint) => ({ endpointId: endpoint.id, eventId, eventType: event.type, payload })))
      .returning({ id: webhookDeliveries.id });
    ids.push(...rows.map((r) => r.id));
  }
  return ids;
}

/**
 * The deliveries of the events a transaction is about to commit, recorded in it: a terminal
 * event's webhooks (batch.completed, book.ready, ...) are what an integration waits for, and
 * recorded after the commit they were lost when the process stopped, or the database failed,
 * in between. The events carry the ids, so the notifier only queues them; a delivery that is
 * never queued is queued by the reconciler.
 */
export async function recordWebhooksIn(tx: Tx, events: ProgressEvent[]): Promise<ProgressEvent[]> {
  const recorded: ProgressEvent[] = [];
  // One at a time: a transaction is one connection, and the events' deliveries keep their order.
  for (const event of events) recorded.push({ ...event, webhookDeliveries: await recordWebhookDeliveries(tx, [event]) });
  return recorded;
}

/** Queues recorded deliveries. Every one is tried; the failures are thrown together at the end. */
async function queueDeliveries(queue: Queue, tuning: JobTuning, ids: string[]): Promise<void> {
  const failures: unknown[] = [];
  for (const id of ids) {
    try {
      await queue.add('deliver', { deliveryId: id }, { ...jobOptions(QUEUE.webhooks, tuning), jobId: jobId.webhook(id) });
    } catch (error) {
      // The delivery is recorded: the reconciler queues it once Redis takes jobs again.
      // The other endpoints and events of this call still get theirs.
      failures.push(error);
    }
  }
  if (failures.length > 0) throw new AggregateError(failures, `${failures.length} webhook deliveries were recorded but not queued; the reconciler will queue them`);
}

/**
 * Records and queues the deliveries of the events, and queues those their change's
 * transaction recorded already (recordWebhooksIn). Returns how many were queued or tried.
 */
export async function dispatchWebhooks(db: Db, queue: Queue, tuning: JobTuning, events: ProgressEvent[]): Promise<number> {
  const ids: string[] = [];
  for (const event of events) {
    // Sequential: one event's deliveries are recorded before the next event's, in order.
    // In a transaction of its own, so that the endpoints' locks last until the insert.
    const recorded = event.webhookDeliveries ?? (isWebhookEvent(event) ? await db.transaction((tx) => recordWebhookDeliveries(tx, [event])) : []);
    ids.push(...recorded);
  }
  await queueDeliveries(queue, tuning, ids);
  return ids.length;
}
