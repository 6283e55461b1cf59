import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// A speech job can end without a voice and without a failure recorded on its track: its worker
// lost past the stall limit, or the job removed (by an operator in Bull Board). Its mix job
// then runs with no voice to mix. Nothing may be lost: the mix job makes the voice itself.

let env: TestEnv;
let api: TestApi;
let worker: TestWorker | undefined;

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

describe('a speech job lost without a voice', () => {
  it('is made good by its mix job: the track is voiced, mixed and completed', { timeout: 120_000 }, async () => {
    // No worker yet: the flow waits in Redis.
    const created = await createBatch(api, { visionId: 'lost-voice', sections: sampleSections(2, 'Lost'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const [lost, kept] = await queryRows<{ id: string }>(env.databaseUrl, 'select id from audio_tracks order by section_index');
    const speech = api.ctx.queues['audio-tts'];
    const mix = api.ctx.queues['audio-mix'];
    const lostJob = await speech.getJob(`tts.${lost!.id}.r1`);
    expect(lostJob).toBeTruthy();
    await lostJob!.remove();
    // Its parent no longer waits for it.
    expect(await (await mix.getJob(`mix.${lost!.id}.r1`))!.getState()).toBe('waiting');

    worker = await startTestWorker(env.config);
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch).toMatchObject({ status: 'completed', tracks_completed: 2, tracks_failed: 0 });
    await expectCountersMatchRows(env.databaseUrl, batch.id);
    const rows = await queryRows(env.databaseUrl, 'select id, status, attempts, rendition_key, mixed_file_key from audio_tracks');
    for (const id of [lost!.id, kept!.id]) {
      expect(rows.find((r) => r.id === id)).toMatchObject({ status: 'completed', attempts: 1, rendition_key: expect.any(String), mixed_file_key: expect.any(String) });
    }
    expect(await speech.getJob(`tts.${lost!.id}.r1`)).toBeUndefined();
  });
});
