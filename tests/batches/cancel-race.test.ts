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

// A finaliser of a run the batch has moved on from (run 1's root, late: its flow landed after
// the API had given up on it and recorded the batch failed; or the reconciler's stuck pass,
// with the run it read before a retry) locked the batch's unfinished tracks before it took the
// batch row and saw the run had changed. A cancel skips the pending tracks another transaction
// holds (SKIP LOCKED, see cancelBatch): a cancel that came in just then cancelled none of the
// retry's pending tracks, answered 202, and they all ran.
describe('a cancel racing a finaliser of an older run', () => {
  it("cancels the retry's pending tracks although run 1's root is finalising", async () => {
    const created = await createBatch(api, { visionId: 'race', sections: sampleSections(2, 'Stale'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    await queryRows(env.databaseUrl, `update audio_tracks set status = 'failed', mix_status = 'skipped', error_type = 'QueueError', error_message = 'lost', completed_at = now() where batch_id = $1`, [batchId]);
    await queryRows(env.databaseUrl, `update audio_generation_batches set status = 'failed', tracks_failed = 2, tracks_pending = 0, completed_at = now() where id = $1`, [batchId]);

    // Run 1's root gets past its own run check, then the user retries (run 2: tracks pending).
    let reached!: () => void;
    const atCheck = new Promise<void>((resolve) => (reached = resolve));
    let proceed!: () => void;
    const gate = new Promise<void>((resolve) => (proceed = resolve));
    const lateRoot = {
      job: { data: { batchId, run: 1 }, attemptsMade: 0, getIgnoredChildrenFailures: async () => (reached(), await gate, {}) } as never,
      token: 't',
      worker: undefined as never,
      maxRateLimitRestarts: 0,
    };
    const root = processAudioBatch(worker, lateRoot);
    root.catch(() => undefined);
    await atCheck;
    const retry = await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST' });
    expect(retry.status).toBe(202);

    // The cancel takes the batch row first; the root then reaches its finaliseBatch and queues
    // up behind it.
    const { cancel } = await holdingRow(env.databaseUrl, 'audio_generation_batches', batchId, async () => {
      const cancel = api.request(`/v1/audio/batches/${batchId}/cancel`, { method: 'POST' });
      cancel.catch(() => undefined);
      await waitFor(async () => (await lockWaits(env.databaseUrl)) === 1, { what: 'the cancel to wait for the batch' });
      proceed();
      await waitFor(async () => (await lockWaits(env.databaseUrl)) === 2, { what: 'the root to wait for the batch' });
      return { cancel };
    });

    expect((await root).status).toBeNull();
    const answer = await cancel;
    expect(answer.status).toBe(202);
    expect(await readJson(answer)).toMatchObject({ status: 'cancelled', run: 2, tracks_cancelled: 2, tracks_pending: 0, tracks_failed: 0 });
    const tracks = await queryRows(env.databaseUrl, 'select status from audio_tracks where batch_id = $1', [batchId]);
    expect(tracks.map((t) => t.status)).toEqual(['cancelled', 'cancelled']);
    await expectCountersMatchRows(env.databaseUrl, batchId);
  });
});
