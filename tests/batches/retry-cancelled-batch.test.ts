import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, getBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { speechRefusal, speechWith } from '../helpers/providers';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// A batch that was cancelled while a track ran, that track failing, ends `cancelled` with a
// failed track to retry. The retry reset started_at, completed_at and error_message for its
// new run but kept cancel_requested_at, so GET /v1/audio/batches/:id showed the retry's run
// as if a cancel were pending for it (the status page says "cancelling" and hides Cancel).

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
// Each speech call waits here until the test lets it go (or the file ends), then fails or
// speaks as `outcome` says.
const held: Array<() => void> = [];
let outcome: 'fail' | 'speak' = 'fail';
let ending = false;

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local', WORKER_CONCURRENCY_AUDIO_TTS: '1' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config, {
    providers: speechWith(env.config, async () => {
      if (!ending) await new Promise<void>((resolve) => held.push(resolve));
      if (outcome === 'fail') throw speechRefusal();
    }),
  });
});
afterAll(async () => {
  ending = true;
  outcome = 'fail';
  for (const release of held.splice(0)) release();
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

describe('a retry of a cancelled batch', () => {
  it('clears cancel_requested_at with the rest of the run before, so the new run shows no pending cancel', async () => {
    const created = await createBatch(api, { visionId: 'cancel-retry', sections: sampleSections(2, 'Cancelled'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;

    // One track is in its speech call (one at a time), the other pending: the cancel
    // cancels the pending one, and the running one fails.
    await waitFor(() => held.length === 1, { what: 'a speech call under way' });
    const cancel = await api.request(`/v1/audio/batches/${batchId}/cancel`, { method: 'POST' });
    expect(cancel.status).toBe(202);
    expect((await readJson(cancel)).cancel_requested_at).toEqual(expect.any(String));
    held.shift()!();
    const cancelled = await waitForTerminal(api, batchId);
    expect(cancelled).toMatchObject({ status: 'cancelled', tracks_failed: 1, tracks_cancelled: 1, cancel_requested_at: expect.any(String) });
    expect(cancelled.completed_at).toEqual(expect.any(String));
    expect(cancelled.error_message).toMatch(/^Cancelled: 1 of 2 tracks were not started/);

    outcome = 'speak';
    const retry = await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST' });
    expect(retry.status).toBe(202);
    expect(await readJson(retry)).toMatchObject({ status: 'processing', run: 2, cancel_requested_at: null, completed_at: null, error_message: null });

    // While the retried track is in its speech call, the batch's view is of a run under way.
    await waitFor(() => held.length === 1, { what: "the retry's speech call under way" });
    const running = await getBatch(api, batchId);
    expect(running).toMatchObject({ status: 'processing', run: 2, tracks_pending: 1, cancel_requested_at: null, completed_at: null, error_message: null });
    expect(Date.parse(running.started_at)).toBeGreaterThanOrEqual(Date.parse(cancelled.completed_at));

    // The track not started stays cancelled, so the batch ends `cancelled` by the usual rule,
    // the retried track completed, and nothing says a cancel was asked of this run.
    held.shift()!();
    const done = await waitForTerminal(api, batchId);
    expect(done).toMatchObject({ status: 'cancelled', tracks_completed: 1, tracks_cancelled: 1, tracks_failed: 0, cancel_requested_at: null });
    await expectCountersMatchRows(env.databaseUrl, batchId);
  });
});
