import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processAudioBatch } from '../../apps/worker/src/processors/audio-batch';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { refusingSpeech } from '../helpers/providers';
import { waitFor } from '../helpers/wait';

// The audio-batch root checks `batch.run === job.data.run` with a plain SELECT, then awaits
// Redis (getIgnoredChildrenFailures), then finaliseBatch() fails every non-terminal track as
// "lost" and finalises - with no run check. A cancel (which finalises the batch itself) and a
// retry (run 2) landing in that window get run 2's fresh tracks failed as "lost" and the batch
// finalised a second time, though run 2's jobs never ran.
let env: TestEnv;
let api: TestApi;
let worker: TestWorker;

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local', WORKER_QUEUES: 'audio-tts,audio-mix' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config, { providers: refusingSpeech(env.config) });
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

// The root job of run 1 reads the batch's run (1), then waits on Redis; meanwhile another API
// replica cancels the finished batch (it ends failed) and retries it (run 2, tracks pending).
// Before, the old root then failed run 2's fresh tracks as "lost" and ended the batch a second
// time; finaliseBatch now checks the run under the batch row's lock, which a retry takes too.
describe('root of run 1 vs cancel + retry', () => {
  it('does not fail the tracks of run 2 nor finalise the batch again', async () => {
    const created = await createBatch(api, { visionId: 'v', sections: sampleSections(2, 'Race'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    await waitFor(async () => {
      const rows = await queryRows(env.databaseUrl, `select status from audio_tracks where batch_id = $1`, [batchId]);
      return rows.every((r: any) => r.status === 'failed') ? true : null;
    }, { what: 'tracks failed' });
    // No more processing of run 2's jobs: we only want to see what run 1's root does.
    await worker.running.close();

    let retriedRun: number | undefined;
    const fakeJob = {
      data: { batchId, run: 1 },
      async getIgnoredChildrenFailures() {
        // Another API replica, between the root's run check and its finaliseBatch:
        const cancel = await api.request(`/v1/audio/batches/${batchId}/cancel`, { method: 'POST' });
        expect(cancel.status).toBe(202); // finalises the batch: nothing pending, nothing running
        const retry = await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST' });
        expect(retry.status).toBe(202);
        retriedRun = (await readJson(retry)).run;
        return {};
      },
    };
    await processAudioBatch(worker.ctx, { job: fakeJob as never, token: 't', worker: undefined as never, maxRateLimitRestarts: 0 });

    const [batch] = await queryRows(env.databaseUrl, `select status, run, tracks_pending, tracks_failed from audio_generation_batches where id = $1`, [batchId]);
    const tracks = await queryRows(env.databaseUrl, `select status, error_message from audio_tracks where batch_id = $1`, [batchId]);
    expect(retriedRun).toBe(2);
    expect(tracks.every((t: any) => t.error_message === null)).toBe(true);
    await expectCountersMatchRows(env.databaseUrl, batchId);
    // Run 2 has not started any job: its tracks must still be pending and the batch processing.
    expect(tracks.map((t: any) => t.status)).toEqual(['pending', 'pending']);
    expect(batch.status).toBe('processing');
  });
});
