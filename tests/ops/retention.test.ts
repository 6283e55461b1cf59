import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { startOpenAiSpeechServer, type OpenAiSpeechFake } from '../fakes/openai-speech-server';

// Redis memory stays bounded however many batches run: retention by count on every node of
// every flow, and event logs that expire after their terminal event. Measured on a private
// Redis with a small retention count, so the bound is reached within a test.
let redis: OwnRedis;
let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let fake: OpenAiSpeechFake;
let client: Redis;

beforeAll(async () => {
  redis = await startOwnRedis();
  fake = await startOpenAiSpeechServer();
  env = await createTestEnv({
    REDIS_URL: redis.url,
    SPEECH_PROVIDER: 'openai',
    OPENAI_API_KEY: 'sk-test',
    OPENAI_BASE_URL: `${fake.url}/v1`,
    JOB_KEEP_COMPLETED: '5',
    EVENT_LOG_FINISHED_TTL_SECONDS: '1',
  });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
  client = new Redis(redis.url);
});
afterAll(async () => {
  client?.disconnect();
  await worker?.close();
  await api?.close();
  await env?.cleanup();
  await fake?.close();
  await redis?.stop();
});

async function runBatches(n: number, offset: number): Promise<void> {
  for (let i = 0; i < n; i += 5) {
    const created = await Promise.all(
      [0, 1, 2, 3, 4].map((j) => createBatch(api, { visionId: `mem-${offset + i + j}`, sections: sampleSections(1, `Memory ${offset + i + j}`), variants: ['voice_only'], voice: 'alloy' })),
    );
    await Promise.all(created.map((c) => waitForTerminal(api, c.body.id)));
  }
}

async function measure() {
  // Event logs of finished batches expire a second after their terminal event.
  await waitFor(async () => (await client.keys(`${env.prefix}:events:*`)).length === 0, { what: 'finished event logs to expire' });
  const keys = (await client.keys(`${env.prefix}:*`)).length;
  const memory = Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
  return { keys, memory };
}

describe('Redis memory across many batches', () => {
  it('stays flat once retention is reached', async () => {
    await runBatches(10, 0);
    const first = await measure();
    await runBatches(10, 10);
    const second = await measure();
    for (const queue of ['audio-batch', 'audio-mix', 'audio-tts']) {
      expect(await client.zcard(`${env.prefix}:${queue}:completed`), queue).toBeLessThanOrEqual(5);
    }
    // Twice the batches, the same footprint: no key per finished batch survives.
    expect(second.keys).toBeLessThanOrEqual(first.keys + 5);
    expect(second.memory).toBeLessThan(first.memory * 1.25);
  });
});
