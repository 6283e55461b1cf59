import { Queue, QueueEvents, Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobOptions, parsePayload, QUEUE, tuningFrom } from '@soundqueue/shared/queues';
import { createProducerConnection, createWorkerConnection } from '@soundqueue/shared/redis';
import { createTestEnv, type TestEnv } from '../helpers/services';

let env: TestEnv;
beforeAll(async () => {
  env = await createTestEnv();
});
afterAll(async () => {
  await env?.cleanup();
});

describe('a job round trip through a real queue and worker', () => {
  it('carries a checked payload and retries with backoff until it succeeds', async () => {
    const producer = createProducerConnection(env.config.REDIS_URL);
    const queue = new Queue(QUEUE.audioMix, { connection: producer, prefix: env.prefix });
    const events = new QueueEvents(QUEUE.audioMix, { connection: createWorkerConnection(env.config.REDIS_URL), prefix: env.prefix });
    const seen: number[] = [];
    const worker = new Worker(
      QUEUE.audioMix,
      async (job) => {
        const payload = parsePayload('audio-mix', job.data);
        seen.push(job.attemptsMade);
        if (job.attemptsMade < 1) throw new Error('first attempt fails');
        return payload.trackId;
      },
      { connection: createWorkerConnection(env.config.REDIS_URL), prefix: env.prefix },
    );
    try {
      await events.waitUntilReady();
      const options = jobOptions(QUEUE.audioMix, tuningFrom(env.config));
      expect(options).toMatchObject({ attempts: 3, backoff: { type: 'exponential', jitter: 0.5 }, removeOnComplete: { age: expect.any(Number), count: expect.any(Number) } });
      const trackId = '4b0b3c1e-2f6c-4a57-9d6c-0a3c2b1d0e9f';
      const job = await queue.add('mix-track', { batchId: trackId, trackId }, options);
      expect(await job.waitUntilFinished(events, 30_000)).toBe(trackId);
      expect(seen).toEqual([0, 1]);
      expect(() => parsePayload('audio-mix', { trackId: 'nope' })).toThrow();
    } finally {
      await worker.close();
      await events.close();
      await queue.close();
      producer.disconnect();
    }
  });
});
