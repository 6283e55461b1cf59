import { collectDefaultMetrics, Counter, register } from 'prom-client';

// Prometheus metrics, on prom-client's default registry: in `npm start` the API and the
// workers share one process and one /metrics; apart, each process serves its own.
// Metrics are module singletons because prom-client refuses to register a name twice.
// Here are the ones every process sets: its process metrics and the outcomes it decides. A
// metric only one side sets lives with that side and registers when that side is loaded, so
// the other side's /metrics does not list it: the workers' in apps/worker/src/metrics.ts, the
// API's store gauges in apps/api/src/store-metrics.ts.

collectDefaultMetrics({ prefix: 'soundqueue_' });

export const outcomes = new Counter({
  name: 'soundqueue_outcomes_total',
  help: 'Batches and books that reached a terminal status in this process',
  labelNames: ['kind', 'status'] as const,
});

export const metricsRegistry = register;
