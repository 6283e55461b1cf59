import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ffmpegMixer } from '../../apps/worker/src/audio/mixer';
import { MixingError } from '@soundqueue/shared/errors';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// The lost-speech-job test, after a retry of a track whose MIX failed: the retried track is
// `pending` but still carries the previous run's rendition_key, so its mix job takes the
// "not waiting to be mixed" branch, skips, and the root fails the track as lost.
let env: TestEnv;
let api: TestApi;
let worker: TestWorker | undefined;

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local', JOB_ATTEMPTS: '1' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

// A retried track starts over: before, it kept the voice of its failed run, so when the retry
// run's speech job was lost the mix job took the pending track for voiced, skipped it, and the
// batch root failed it as lost (the README promises a lost speech job is made good by its mix
// job, in every run).
describe('a speech job lost in a retry run', () => {
  it('is made good by its mix job, as in the first run', { timeout: 120_000 }, async () => {
    worker = await startTestWorker(env.config, {
      mixer: { ...ffmpegMixer, mixTrack: async () => { throw new MixingError('mixer broken'); } },
    });
    const created = await createBatch(api, { visionId: 'retry-lost', sections: sampleSections(1, 'Retry'), variants: ['voice_only'], voice: 'alloy' });
    const first = await waitForTerminal(api, created.body.id);
    expect(first).toMatchObject({ status: 'failed', tracks_failed: 1 });
    await worker.close();
    worker = undefined;

    const retried = await api.request(`/v1/audio/batches/${first.id}/retry`, { method: 'POST' });
    expect(retried.status).toBe(202);
    const [track] = await queryRows<{ id: string; status: string; rendition_key: string | null }>(env.databaseUrl, 'select id, status, rendition_key from audio_tracks');
    expect(track).toMatchObject({ status: 'pending', rendition_key: null });
    // The run-2 speech job is lost (removed by an operator, as in tests/batches/lost-speech-job).
    await (await api.ctx.queues['audio-tts'].getJob(`tts.${track!.id}.r2`))!.remove();

    worker = await startTestWorker(env.config);
    const batch = await waitForTerminal(api, first.id);
    await expectCountersMatchRows(env.databaseUrl, batch.id);
    expect(batch).toMatchObject({ status: 'completed', tracks_completed: 1 });
  });
});
