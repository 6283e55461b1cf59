import { createRequire } from 'node:module';

// autocannon (it ships no types) behind a small typed wrapper, and the percentiles the load
// test reports for latencies it measures itself (event streams).

export interface AutocannonOptions {
  url: string;
  connections: number;
  /** Total requests; with amount === connections every connection sends exactly one. */
  amount: number;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  /** Seconds before a request counts as timed out. */
  timeout?: number;
}

export interface AutocannonResult {
  requests: { total: number; average: number };
  latency: { p50: number; p90: number; p99: number; max: number; average: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
  statusCodeStats: Record<string, { count: number }>;
  duration: number;
}

type Autocannon = (options: AutocannonOptions & { bailout?: number }) => Promise<AutocannonResult>;

export async function runAutocannon(options: AutocannonOptions): Promise<AutocannonResult> {
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
  return autocannon({ timeout: 60, ...options });
}

/** The p-th percentile (0–100) of a list of numbers, nearest rank. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}
