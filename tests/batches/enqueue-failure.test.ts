import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { postBook } from '../helpers/books';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// When Redis refuses the flow, nothing may wait forever: the batch or book is recorded as
// failed with the reason, and the client hears 503.
let redis: OwnRedis;
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  redis = await startOwnRedis();
  env = await createTestEnv({ REDIS_URL: redis.url });
  api = await startTestApi(env.config);
  await redis.stop();
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

describe('enqueueing while Redis is down', () => {
  it('marks the batch failed with the reason and answers 503', async () => {
    const res = await createBatch(api, { visionId: 'down', sections: sampleSections(2), variants: ['voice_only'], voice: 'alloy' });
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('queue_unavailable');
    const [batch] = await queryRows(env.databaseUrl, 'select * from audio_generation_batches where id = $1', [res.body.error.details.batchId]);
    expect(batch).toMatchObject({ status: 'failed', tracks_failed: 2, tracks_pending: 0 });
    expect(batch.error_message).toMatch(/Could not enqueue the batch's jobs/);
    const tracks = await queryRows(env.databaseUrl, `select status, error_message from audio_tracks where batch_id = $1`, [batch.id]);
    expect(tracks.every((t) => t.status === 'failed' && /Could not enqueue/.test(t.error_message))).toBe(true);
  });

  it('marks the book failed with the reason and answers 503', async () => {
    const res = await postBook(api, { title: 'Down', pages: ['a forest', 'the sea'] });
    expect(res.status).toBe(503);
    const [book] = await queryRows(env.databaseUrl, 'select * from books where id = $1', [res.body.error.details.bookId]);
    expect(book.status).toBe('failed');
    expect(book.processing_errors[0].message).toMatch(/Could not enqueue the book's jobs/);
  });

  it('reports Redis in /readyz', async () => {
    const res = await fetch(`${api.url}/readyz`);
    expect(res.status).toBe(503);
    const body = await res.json() as { error: { message: string } };
    expect(body.error.message).toBe('not ready: redis unreachable');
  });
});
