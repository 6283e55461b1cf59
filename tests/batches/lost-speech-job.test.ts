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

  it('a lost mix job fails its track as a queue error, not a speech one, and a retry makes it good', { timeout: 120_000 }, async () => {
    await worker?.close();
    worker = undefined;
    const created = await createBatch(api, { visionId: 'lost-mix', sections: sampleSections(2, 'Mixless'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const [lost] = await queryRows<{ id: string }>(env.databaseUrl, 'select id from audio_tracks where batch_id = $1 order by section_index', [created.body.id]);
    // Removed as an operator would in Bull Board (its speech job goes with it): the batch's
    // root no longer waits for it, and finds the track unfinished.
    const mixJob = await api.ctx.queues['audio-mix'].getJob(`mix.${lost!.id}.r1`);
    expect(mixJob).toBeTruthy();
    await mixJob!.remove();

    worker = await startTestWorker(env.config);
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch).toMatchObject({ status: 'partial_success', tracks_completed: 1, tracks_failed: 1 });
    await expectCountersMatchRows(env.databaseUrl, batch.id);
    const [track] = await queryRows(env.databaseUrl, 'select status, error_type, error_message from audio_tracks where id = $1', [lost!.id]);
    expect(track).toMatchObject({ status: 'failed', error_type: 'QueueError' });
    expect(track.error_message).toMatch(/^The track's job was lost before it finished .*; retry the batch's failed tracks\.$/);
    expect(batch.error_message).toMatch(/QueueError/);
    expect(batch.error_message).not.toMatch(/SpeechGenerationError/);

    const retried = await api.request(`/v1/audio/batches/${batch.id}/retry`, { method: 'POST' });
    expect(retried.status).toBe(202);
    expect(await waitForTerminal(api, batch.id)).toMatchObject({ status: 'completed', tracks_completed: 2, tracks_failed: 0, run: 2 });
    await expectCountersMatchRows(env.databaseUrl, batch.id);
  });
});
