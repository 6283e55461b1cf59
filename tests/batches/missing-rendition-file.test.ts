import { access, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { voiceRenditions } from '@soundqueue/shared/db/schema';
import { dropMissingRendition } from '../../apps/worker/src/speech/rendition';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// A voice rendition marked ready whose stored file is gone (storage drivers switched, a volume
// lost, a lifecycle rule) used to be handed out for ever: every mix of it failed with ENOENT,
// on every attempt and every retry. The mix job now makes the voice again, once.

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

const speechCalls = async () => (await queryRows<{ n: number }>(env.databaseUrl, `select count(*)::int as n from provider_calls where kind = 'speech'`))[0]!.n;

describe('a ready voice rendition whose file is missing', () => {
  it('is synthesized again, once, by the mix jobs that need it, and their batch completes', { timeout: 180_000 }, async () => {
    const sections = sampleSections(1, 'Lost file');
    // Local speech ignores delivery instructions: both variants' tracks share one rendition.
    const request = { visionId: 'missing-voice', sections, variants: ['voice_only', 'sleep'], voice: 'alloy' };
    const first = await createBatch(api, request);
    expect(first.status).toBe(201);
    expect(await waitForTerminal(api, first.body.id)).toMatchObject({ status: 'completed', tracks_completed: 2 });
    expect(await speechCalls()).toBe(1);
    const [before] = await queryRows(env.databaseUrl, `select key_hash, storage_key, updated_at from voice_renditions`);
    expect(before).toMatchObject({ storage_key: expect.any(String) });
    await rm(join(env.storageDir, before.storage_key));

    // The same text and voice: both tracks are handed the ready rendition, whose file is gone.
    const second = await createBatch(api, { ...request, visionId: 'missing-voice-again' });
    expect(second.status).toBe(201);
    const batch = await waitForTerminal(api, second.body.id);
    expect(batch).toMatchObject({ status: 'completed', tracks_completed: 2, tracks_failed: 0 });
    await expectCountersMatchRows(env.databaseUrl, batch.id);

    // Exactly one new synthesis, stored where the rendition says (a storage key of its claim's
    // own: storageKeys.rendition), under the same cache key.
    expect(await speechCalls()).toBe(2);
    const renditions = await queryRows(env.databaseUrl, `select key_hash, status, storage_key, updated_at from voice_renditions`);
    expect(renditions).toHaveLength(1);
    expect(renditions[0]).toMatchObject({ key_hash: before.key_hash, status: 'ready', storage_key: expect.stringContaining(before.key_hash) });
    expect(renditions[0].storage_key).not.toBe(before.storage_key);
    expect(renditions[0].updated_at.getTime()).toBeGreaterThan(before.updated_at.getTime());
    await access(join(env.storageDir, renditions[0].storage_key));
    const tracks = await queryRows(env.databaseUrl, `select id, status, rendition_key, voice_file_key from audio_tracks where batch_id = $1`, [batch.id]);
    for (const track of tracks) {
      expect(track).toMatchObject({ status: 'completed', rendition_key: before.key_hash, voice_file_key: renditions[0].storage_key });
      const audio = await api.request(`/v1/audio/tracks/${track.id}/audio`);
      expect(audio.status).toBe(200);
      expect((await audio.arrayBuffer()).byteLength).toBeGreaterThan(1000);
    }
  });

  it('drops only the row as it was read: a re-synthesis finished since, under the same storage key, is kept', async () => {
    const [read] = await worker.ctx.db.select().from(voiceRenditions);
    expect(read).toBeTruthy();
    // Another track's job found the file missing too, and has already made the voice again.
    await queryRows(env.databaseUrl, `update voice_renditions set updated_at = updated_at + interval '1 second'`);
    expect(await dropMissingRendition(worker.ctx, read!)).toBe(false);
    expect(await queryRows(env.databaseUrl, `select key_hash from voice_renditions`)).toHaveLength(1);
    // As read now (PostgreSQL's microseconds against a Date's milliseconds), it is dropped.
    const [current] = await worker.ctx.db.select().from(voiceRenditions);
    expect(await dropMissingRendition(worker.ctx, current!)).toBe(true);
    expect(await queryRows(env.databaseUrl, `select key_hash from voice_renditions`)).toHaveLength(0);
  });
});
