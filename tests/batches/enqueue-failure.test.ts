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
    // The answer says what happened and the way out: a repeated POST with the same
    // Idempotency-Key would return this batch as it is; a retry runs its tracks again.
    expect(res.body.error.message).toContain(`(the batch is failed); retry them with POST /v1/audio/batches/${batch.id}/retry once the queue is back.`);
    expect(res.body.error.details).toEqual({ batchId: batch.id, status: 'failed' });
  });

  it('a retry it cannot enqueue: only its tracks fail, and the batch ends by its counts', async () => {
    const created = await createBatch(api, { visionId: 'down-retry', sections: sampleSections(2), variants: ['voice_only'], voice: 'alloy' });
    const batchId = created.body.error.details.batchId as string;
    // One of the two tracks had completed in an earlier run (as if Redis had been up then).
    await queryRows(env.databaseUrl, `update audio_tracks set status = 'completed', mix_status = 'completed', error_type = null, error_message = null where id = (select id from audio_tracks where batch_id = $1 order by section_index limit 1)`, [batchId]);
    await queryRows(env.databaseUrl, `update audio_generation_batches set status = 'partial_success', tracks_completed = 1, tracks_failed = 1 where id = $1`, [batchId]);

    const res = await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST' });
    expect(res.status).toBe(503);
    const body = await res.json() as { error: { code: string; message: string; details: unknown } };
    expect(body.error.code).toBe('queue_unavailable');
    expect(body.error.message).toContain('(the batch is partial_success)');
    expect(body.error.details).toEqual({ batchId, status: 'partial_success' });
    const [batch] = await queryRows(env.databaseUrl, 'select * from audio_generation_batches where id = $1', [batchId]);
    expect(batch).toMatchObject({ status: 'partial_success', run: 2, tracks_completed: 1, tracks_failed: 1, tracks_pending: 0 });
    expect(batch.error_message).toMatch(/^Could not enqueue the batch's jobs: /);
  });

  it('marks the book failed with the reason and answers 503', async () => {
    const res = await postBook(api, { title: 'Down', pages: ['a forest', 'the sea'] });
    expect(res.status).toBe(503);
    const [book] = await queryRows(env.databaseUrl, 'select * from books where id = $1', [res.body.error.details.bookId]);
    expect(book.status).toBe('failed');
    expect(book.processing_errors[0].message).toMatch(/Could not enqueue the book's jobs/);
    // A queue's refusal, not the database's; and the way to run it again is the book's own.
    expect(book.processing_errors[0].errorType).toBe('QueueError');
    expect(res.body.error.message).toContain(`start it again with POST /v1/books/${book.id}/soundscapes once the queue is back.`);
  });

  it('reports Redis in /readyz', async () => {
    const res = await fetch(`${api.url}/readyz`);
    expect(res.status).toBe(503);
    const body = await res.json() as { error: { message: string } };
    expect(body.error.message).toBe('not ready: redis unreachable');
  });
});
