import { Counter, Histogram } from 'prom-client';

// A worker's own metrics, on prom-client's default registry beside the process metrics
// (packages/shared/src/metrics.ts). Only a process that runs workers loads this file, so an
// API process's /metrics does not list histograms it never observes.

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

export const sweptFiles = new Counter({
  name: 'soundqueue_storage_swept_files_total',
  help: 'Stored files the storage sweep removed (no row used them, or an abandoned temporary file), by folder',
  labelNames: ['folder'] as const,
});
