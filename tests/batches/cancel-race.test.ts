import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkerContext, type WorkerContext } from '../../apps/worker/src/index';
import { processAudioBatch } from '../../apps/worker/src/processors/audio-batch';
import { readJson, startTestApi, type TestApi } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections } from '../helpers/batches';
import { createTestEnv, holdingRow, lockWaits, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// A cancel decides from the batch's status: 409 once the batch has ended (README, "Batch
// statuses and the cancel rule"). It read the status, then wrote: a batch its root ended in
// between was answered 202, with cancel_requested_at stamped on the finished batch. Each case
// here holds the batch row in a transaction of its own, lets the root (or the cancel) queue
// up behind it, and releases it: the race made deterministic with PostgreSQL's own locks.

let env: TestEnv;
let api: TestApi;
let worker: WorkerContext;

beforeAll(async () => {
  // No workers: the flows the API enqueues are never run; each case drives its step itself.
  env = await createTestEnv();
  api = await startTestApi(env.config);
  worker = await createWorkerContext(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

const rootRun = (batchId: string) => ({
  job: { data: { batchId, run: 1 }, attemptsMade: 0, getIgnoredChildrenFailures: async () => ({}) } as never,
  token: 't',
  worker: undefined as never,
  maxRateLimitRestarts: 0,
});

/** A batch whose every track completed and whose root has not run yet: `processing`. */
async function batchAwaitingItsRoot(tracks: number): Promise<string> {
  const created = await createBatch(api, { visionId: 'race', sections: sampleSections(tracks, 'Race'), variants: ['voice_only'], voice: 'alloy' });
  expect(created.status).toBe(201);
  const batchId = created.body.id as string;
  await queryRows(env.databaseUrl, `update audio_tracks set status = 'completed', mix_status = 'completed', mixed_file_key = 'k', started_at = now(), completed_at = now() where batch_id = $1`, [batchId]);
  await queryRows(env.databaseUrl, `update audio_generation_batches set status = 'processing', started_at = now(), tracks_completed = $2, tracks_pending = 0 where id = $1`, [batchId, tracks]);
  return batchId;
}

describe('a cancel racing the end of its batch', () => {
  it('answers 409 when the root ended the batch while the cancel was on its way', async () => {
    const batchId = await batchAwaitingItsRoot(2);
    const { root, cancel } = await holdingRow(env.databaseUrl, 'audio_generation_batches', batchId, async () => {
      // The root comes first and waits for the batch row; the cancel arrives after it.
      const root = processAudioBatch(worker, rootRun(batchId));
      root.catch(() => undefined);
      await waitFor(async () => (await lockWaits(env.databaseUrl)) === 1, { what: 'the root to wait for the batch' });
      const cancel = api.request(`/v1/audio/batches/${batchId}/cancel`, { method: 'POST' });
      cancel.catch(() => undefined);
      await waitFor(async () => (await lockWaits(env.databaseUrl)) === 2, { what: 'the cancel to wait for the batch' });
      return { root, cancel };
    });

    expect((await root).status).toBe('completed');
    const answer = await cancel;
    const body = await readJson(answer);
    expect({ status: answer.status, body }).toEqual({
      status: 409,
      body: { error: { code: 'batch_finished', message: 'batch already completed', details: null } },
    });
    const [batch] = await queryRows(env.databaseUrl, 'select status, cancel_requested_at from audio_generation_batches where id = $1', [batchId]);
    expect(batch).toEqual({ status: 'completed', cancel_requested_at: null });
    await expectCountersMatchRows(env.databaseUrl, batchId);
  });

  it('answers 202 when it took the batch first; the root then ends the batch by the usual rule', async () => {
    const batchId = await batchAwaitingItsRoot(2);
    const { root, cancel } = await holdingRow(env.databaseUrl, 'audio_generation_batches', batchId, async () => {
      const cancel = api.request(`/v1/audio/batches/${batchId}/cancel`, { method: 'POST' });
      cancel.catch(() => undefined);
      await waitFor(async () => (await lockWaits(env.databaseUrl)) >= 1, { what: 'the cancel to wait for the batch' });
      const root = processAudioBatch(worker, rootRun(batchId));
      root.catch(() => undefined);
      return { root, cancel };
    });

    // Every track had ended: the cancel cancels nothing, and the batch it found unfinished
    // is finished at once, by its counts.
    const answer = await cancel;
    expect(answer.status).toBe(202);
    expect(await readJson(answer)).toMatchObject({ status: 'completed', tracks_completed: 2, tracks_cancelled: 0 });
    expect((await root).status).toBeNull();
    // The cancel took effect before the batch ended, in one transaction with its end.
    const [batch] = await queryRows(env.databaseUrl, 'select cancel_requested_at <= completed_at as before_the_end from audio_generation_batches where id = $1', [batchId]);
    expect(batch).toEqual({ before_the_end: true });
    await expectCountersMatchRows(env.databaseUrl, batchId);
  });
});
