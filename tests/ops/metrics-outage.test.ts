import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { createTestEnv, type TestEnv } from '../helpers/services';

// /metrics while a store is down or slow: monitoring matters most then. Before, one failing
// read made the whole scrape a 503 (process metrics and counters included), and a locked
// table made it hang. Each store read now has its own time limit, and what could not be read
// is left out and named in soundqueue_scrape_errors. Redis is this file's own, to stop it.

let redis: OwnRedis;
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  redis = await startOwnRedis();
  env = await createTestEnv({ REDIS_URL: redis.url });
  api = await startTestApi(env.config);
  expect((await createBatch(api, { visionId: 'metrics', sections: sampleSections(1, 'Metric'), variants: ['voice_only'], voice: 'alloy' })).status).toBe(201);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
  await redis?.stop();
});

const scrape = async () => {
  const res = await fetch(`${api.url}/metrics`);
  return { status: res.status, text: await res.text() };
};
const line = (text: string, prefix: string) => text.split('\n').find((l) => l.startsWith(prefix));

describe('/metrics during an outage', () => {
  it('serves everything, and says no store read failed, when the stores are up', async () => {
    const { status, text } = await scrape();
    expect(status).toBe(200);
    expect(line(text, 'soundqueue_queue_jobs{queue="audio-tts",state="waiting"}')).toBeDefined();
    expect(line(text, 'soundqueue_batches{status="pending"}')).toBe('soundqueue_batches{status="pending"} 1');
    expect(line(text, 'soundqueue_scrape_errors{gauge="soundqueue_queue_jobs"}')).toBe('soundqueue_scrape_errors{gauge="soundqueue_queue_jobs"} 0');
  });

  it('still serves the rest when PostgreSQL is slow (a table locked), naming the gauges it left out', async () => {
    const locker = new pg.Client({ connectionString: env.databaseUrl });
    await locker.connect();
    try {
      await locker.query('begin');
      await locker.query('lock table audio_generation_batches in access exclusive mode');
      const { status, text } = await scrape();
      expect(status).toBe(200);
      expect(line(text, 'soundqueue_scrape_errors{gauge="soundqueue_batches"}')).toBe('soundqueue_scrape_errors{gauge="soundqueue_batches"} 1');
      expect(line(text, 'soundqueue_batches{')).toBeUndefined();
      // Redis answered: queue counts are there, and so are the process metrics.
      expect(line(text, 'soundqueue_queue_jobs{queue="audio-tts",state="waiting"}')).toBeDefined();
      expect(line(text, 'soundqueue_process_cpu_seconds_total')).toBeDefined();
    } finally {
      await locker.query('rollback');
      await locker.end();
    }
  });

  it('still serves the rest when Redis is down', async () => {
    await redis.stop();
    try {
      const { status, text } = await scrape();
      expect(status).toBe(200);
      expect(line(text, 'soundqueue_scrape_errors{gauge="soundqueue_queue_jobs"}')).toBe('soundqueue_scrape_errors{gauge="soundqueue_queue_jobs"} 1');
      expect(line(text, 'soundqueue_queue_jobs{')).toBeUndefined();
      expect(line(text, 'soundqueue_batches{status="pending"}')).toBe('soundqueue_batches{status="pending"} 1');
      expect(line(text, 'soundqueue_scrape_errors{gauge="soundqueue_batches"}')).toBe('soundqueue_scrape_errors{gauge="soundqueue_batches"} 0');
    } finally {
      await redis.start();
    }
  });
});
