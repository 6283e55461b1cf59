import type { Queue } from 'bullmq';
import { collectDefaultMetrics, Counter, Gauge, Histogram, register } from 'prom-client';
import { sql } from 'drizzle-orm';
import type { Db } from './db/client';

// Prometheus metrics, on prom-client's default registry: in `npm start` the API and the
// workers share one process and one /metrics; apart, each process serves its own.
// Metrics are module singletons because prom-client refuses to register a name twice.

collectDefaultMetrics({ prefix: 'soundqueue_' });

export const jobDuration = new Histogram({
  name: 'soundqueue_job_duration_seconds',
  help: 'Time a job attempt spent in its processor, by queue and outcome',
  labelNames: ['queue', 'outcome'] as const,
  buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600],
});

export const providerCallDuration = new Histogram({
  name: 'soundqueue_provider_call_duration_seconds',
  help: 'Latency of provider calls, by provider, kind and outcome',
  labelNames: ['provider', 'kind', 'outcome'] as const,
  buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
});

export const providerCost = new Counter({
  name: 'soundqueue_provider_cost_usd_total',
  help: 'Cost of provider calls made by this process, USD',
  labelNames: ['provider', 'kind'] as const,
});

export const outcomes = new Counter({
  name: 'soundqueue_outcomes_total',
  help: 'Batches and books that reached a terminal status in this process',
  labelNames: ['kind', 'status'] as const,
});

/** Where the scrape-time gauges read from: registered by each API context. */
const sources = new Set<{ db: Db; queues: Queue[] }>();

export function addMetricsSource(source: { db: Db; queues: Queue[] }): () => void {
  sources.add(source);
  return () => sources.delete(source);
}

const first = () => sources.values().next().value as { db: Db; queues: Queue[] } | undefined;

new Gauge({
  name: 'soundqueue_queue_jobs',
  help: 'Jobs per queue and state (shared across every replica: read from Redis)',
  labelNames: ['queue', 'state'] as const,
  async collect() {
    this.reset();
    const source = first();
    if (!source) return;
    for (const queue of source.queues) {
      const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'waiting-children', 'prioritized', 'completed');
      for (const [state, n] of Object.entries(counts)) this.set({ queue: queue.name, state }, n);
    }
  },
});

new Gauge({
  name: 'soundqueue_batches',
  help: 'Audio batches by status (from PostgreSQL)',
  labelNames: ['status'] as const,
  async collect() {
    this.reset();
    const source = first();
    if (!source) return;
    const rows = await source.db.execute<{ status: string; n: number }>(sql`select status, count(*)::int as n from audio_generation_batches group by status`);
    for (const row of rows.rows) this.set({ status: row.status }, row.n);
  },
});

new Gauge({
  name: 'soundqueue_books',
  help: 'Books by status (from PostgreSQL)',
  labelNames: ['status'] as const,
  async collect() {
    this.reset();
    const source = first();
    if (!source) return;
    const rows = await source.db.execute<{ status: string; n: number }>(sql`select status, count(*)::int as n from books group by status`);
    for (const row of rows.rows) this.set({ status: row.status }, row.n);
  },
});

new Gauge({
  name: 'soundqueue_cost_usd',
  help: 'Total recorded provider cost by provider, USD (from PostgreSQL)',
  labelNames: ['provider'] as const,
  async collect() {
    this.reset();
    const source = first();
    if (!source) return;
    const rows = await source.db.execute<{ provider: string; cost: string }>(sql`select provider, sum(cost_usd)::text as cost from provider_calls group by provider`);
    for (const row of rows.rows) this.set({ provider: row.provider }, Number(row.cost));
  },
});

export const metricsRegistry = register;
