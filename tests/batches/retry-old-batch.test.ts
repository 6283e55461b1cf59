import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reconcile } from '../../apps/worker/src/reconciler';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, getBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { speechRefusal, speechWith } from '../helpers/providers';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// A batch created more than STUCK_AFTER_MS ago whose failed tracks are retried: the retry is
// a fresh run with a live root job, yet the reconciler fails it as "stuck" as soon as the
// batch row has not been touched for RECONCILE_GRACE_MS (one slow speech call, a 429 pause).
let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let mode: 'fail' | 'hang' = 'fail';
let release: () => void = () => {};

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config, {
    providers: speechWith(env.config, async () => {
      if (mode === 'fail') throw speechRefusal();
      await new Promise<void>((resolve) => { release = resolve; setTimeout(resolve, 20_000); });
    }),
  });
});
afterAll(async () => {
  mode = 'fail';
  release();
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

// STUCK_AFTER_MS counts from the current run's start: before, it counted from the batch's
// creation, so the reconciler failed the live retry run of any batch older than 6 h as stuck
// as soon as its speech call outlasted RECONCILE_GRACE_MS.
describe('reconciler vs a retry of an old batch', () => {
  it('does not time out a retry run that has a live root job', async () => {
    const created = await createBatch(api, { visionId: 'old', sections: sampleSections(1, 'Old'), variants: ['voice_only'], voice: 'alloy' });
    const first = await waitForTerminal(api, created.body.id);
    expect(first.status).toBe('failed');
    // The batch was made yesterday.
    await queryRows(env.databaseUrl, `update audio_generation_batches set created_at = now() - interval '1 day' where id = $1`, [first.id]);
    mode = 'hang';
    const retried = await api.request(`/v1/audio/batches/${first.id}/retry`, { method: 'POST' });
    expect(retried.status).toBe(202);
    await waitFor(async () => (await getBatch(api, first.id)).tracks.every((t: any) => t.status === 'generating'), { what: 'track generating' });
    // The speech call has been running for two minutes: nothing touched the batch row.
    await queryRows(env.databaseUrl, `update audio_generation_batches set updated_at = now() - interval '2 minutes' where id = $1`, [first.id]);
    expect(await worker.ctx.queues['audio-batch'].getJobState(`batch.${first.id}.r2`)).toBe('waiting-children');
    const report = await reconcile(worker.ctx);
    const batch = await getBatch(api, first.id);
    expect(report.batchesTimedOut).not.toContain(first.id);
    expect(batch.status).toBe('processing');
    expect(batch.tracks[0].status).toBe('generating');
  });
});
