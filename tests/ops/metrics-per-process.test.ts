import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, killAll, spawnApi, spawnWorker, type ServiceProcess } from '../helpers/processes';
import { createTestEnv, type TestEnv } from '../helpers/services';

// Each process's /metrics holds the metrics that process sets. The store gauges and
// soundqueue_scrape_errors are the API's (read from Redis and PostgreSQL when the API is
// scraped); the job and provider-call metrics are the workers'. A worker served
// soundqueue_scrape_errors{gauge="soundqueue_batches"} 0 and the rest, "read fine" about
// reads it never makes, beside empty store gauges; the API served empty worker histograms.

const STORE_METRICS = ['soundqueue_queue_jobs', 'soundqueue_batches', 'soundqueue_books', 'soundqueue_cost_usd', 'soundqueue_scrape_errors'];
const WORKER_METRICS = ['soundqueue_job_duration_seconds', 'soundqueue_provider_call_duration_seconds', 'soundqueue_provider_cost_usd_total'];
const BOTH = ['soundqueue_outcomes_total', 'soundqueue_process_cpu_seconds_total'];

let env: TestEnv;
let api: ServiceProcess | undefined;
let worker: ServiceProcess | undefined;
let apiPort: number;
let workerPort: number;

beforeAll(async () => {
  env = await createTestEnv();
  [apiPort, workerPort] = [await freePort(), await freePort()];
  api = spawnApi({ ...env.env, PORT: String(apiPort) });
  worker = spawnWorker({ ...env.env, WORKER_METRICS_PORT: String(workerPort) });
  await Promise.all([api.ready, worker.ready]);
}, 120_000);
afterAll(async () => {
  await killAll([api, worker]);
  await env?.cleanup();
});

/** The metric names a /metrics answer declares (its # TYPE lines), samples or not. */
async function metricNames(url: string): Promise<string[]> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return (await res.text())
    .split('\n')
    .filter((line) => line.startsWith('# TYPE '))
    .map((line) => line.split(' ')[2]!);
}

describe('/metrics per process', () => {
  it("a worker's holds its own metrics and none of the API's store gauges", async () => {
    const names = await metricNames(`http://127.0.0.1:${workerPort}/metrics`);
    expect(names).toEqual(expect.arrayContaining([...WORKER_METRICS, ...BOTH]));
    for (const name of STORE_METRICS) expect(names, name).not.toContain(name);
  });

  it("the API's holds the store gauges and none of the workers' metrics", async () => {
    const names = await metricNames(`http://127.0.0.1:${apiPort}/metrics`);
    expect(names).toEqual(expect.arrayContaining([...STORE_METRICS, ...BOTH]));
    for (const name of WORKER_METRICS) expect(names, name).not.toContain(name);
  });
});
