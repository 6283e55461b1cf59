import type { Queue } from 'bullmq';
import { Gauge } from 'prom-client';
import { sql } from 'drizzle-orm';
import type { Db } from '@soundqueue/shared/db/client';
import { batchStatuses, bookStatuses } from '@soundqueue/shared/db/schema';

// The API's scrape-time gauges: the state of the whole system, read from Redis and PostgreSQL
// when /metrics is scraped, on prom-client's default registry beside the process metrics
// (packages/shared/src/metrics.ts). Only the API loads this file: a worker never reads the
// stores for a scrape, and its /metrics listed these gauges empty and soundqueue_scrape_errors
// at 0 for every one, "read fine" about reads it never made.

/** Where the scrape-time gauges read from: registered by each API context. */
const sources = new Set<{ db: Db; queues: Queue[] }>();

export function addMetricsSource(source: { db: Db; queues: Queue[] }): () => void {
  sources.add(source);
  return () => sources.delete(source);
}

const first = () => sources.values().next().value as { db: Db; queues: Queue[] } | undefined;

/** How long one scrape waits for each store: a scrape must answer while a store is down or slow. */
export const SCRAPE_READ_TIMEOUT_MS = 2_000;

interface StoreSnapshot {
  queueJobs: Array<{ queue: string; state: string; n: number }> | null;
  batches: Array<{ status: string; n: number }> | null;
  books: Array<{ status: string; n: number }> | null;
  cost: Array<{ provider: string; cost: number }> | null;
}

function withinTimeout<T>(read: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${SCRAPE_READ_TIMEOUT_MS} ms`)), SCRAPE_READ_TIMEOUT_MS);
  });
  return Promise.race([read, timeout]).finally(() => clearTimeout(timer));
}

/** A part the store could not give (down, slow) is null: its gauge is left out of this scrape. */
async function settle<T>(read: () => Promise<T>): Promise<T | null> {
  try {
    return await withinTimeout(read());
  } catch {
    return null;
  }
}

async function readStores(): Promise<StoreSnapshot> {
  const source = first();
  if (!source) return { queueJobs: [], batches: [], books: [], cost: [] };
  const count = (table: 'audio_generation_batches' | 'books') =>
    settle(async () => (await source.db.execute<{ status: string; n: number }>(sql`select status, count(*)::int as n from ${sql.identifier(table)} group by status`)).rows);
  const [queueJobs, batches, books, cost] = await Promise.all([
    settle(async () => {
      const rows: Array<{ queue: string; state: string; n: number }> = [];
      for (const queue of source.queues) {
        const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'waiting-children', 'prioritized', 'completed');
        for (const [state, n] of Object.entries(counts)) rows.push({ queue: queue.name, state, n });
      }
      return rows;
    }),
    count('audio_generation_batches'),
    count('books'),
    settle(async () =>
      (await source.db.execute<{ provider: string; cost: string }>(sql`select provider, sum(cost_usd)::text as cost from provider_calls group by provider`)).rows.map((r) => ({
        provider: r.provider,
        cost: Number(r.cost),
      })),
    ),
  ]);
  return { queueJobs, batches, books, cost };
}

// One read of the stores per scrape, shared by every gauge below (prom-client collects them
// concurrently): the gauges agree with each other, overlapping scrapes do not interleave
// their resets, and a failed read leaves out only its own gauge (the process metrics and
// counters are still served) while soundqueue_scrape_errors says which.
let pending: Promise<StoreSnapshot> | null = null;
function snapshot(): Promise<StoreSnapshot> {
  pending ??= readStores().finally(() => setImmediate(() => (pending = null)));
  return pending;
}

new Gauge({
  name: 'soundqueue_scrape_errors',
  help: 'Store reads this scrape could not make (1), by the gauge they feed; its values are left out',
  labelNames: ['gauge'] as const,
  async collect() {
    const parts = await snapshot();
    this.reset();
    const gauges = { queueJobs: 'soundqueue_queue_jobs', batches: 'soundqueue_batches', books: 'soundqueue_books', cost: 'soundqueue_cost_usd' } as const;
    for (const [part, gauge] of Object.entries(gauges)) this.set({ gauge }, parts[part as keyof StoreSnapshot] === null ? 1 : 0);
  },
});

new Gauge({
  name: 'soundqueue_queue_jobs',
  help: 'Jobs per queue and state (shared across every replica: read from Redis)',
  labelNames: ['queue', 'state'] as const,
  async collect() {
    const rows = (await snapshot()).queueJobs;
    this.reset();
    for (const row of rows ?? []) this.set({ queue: row.queue, state: row.state }, row.n);
  },
});

/**
 * Every status, 0 where no row has it: a status left out made its series vanish (and an
 * alert on it read "no data" rather than 0). A read that failed leaves the whole gauge out.
 */
function setByStatus(gauge: Gauge<'status'>, statuses: readonly string[], rows: Array<{ status: string; n: number }> | null): void {
  gauge.reset();
  if (rows === null) return;
  for (const status of statuses) gauge.set({ status }, rows.find((row) => row.status === status)?.n ?? 0);
}

new Gauge({
  name: 'soundqueue_batches',
  help: 'Audio batches by status (from PostgreSQL)',
  labelNames: ['status'] as const,
  async collect() {
    setByStatus(this, batchStatuses, (await snapshot()).batches);
  },
});

new Gauge({
  name: 'soundqueue_books',
  help: 'Books by status (from PostgreSQL)',
  labelNames: ['status'] as const,
  async collect() {
    setByStatus(this, bookStatuses, (await snapshot()).books);
  },
});

new Gauge({
  name: 'soundqueue_cost_usd',
  help: 'Total recorded provider cost by provider, USD (from PostgreSQL)',
  labelNames: ['provider'] as const,
  async collect() {
    const rows = (await snapshot()).cost;
    this.reset();
    for (const row of rows ?? []) this.set({ provider: row.provider }, row.cost);
  },
});
