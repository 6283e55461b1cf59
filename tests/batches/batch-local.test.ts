import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getVariant } from '@soundqueue/shared/variants';
import { measureLoudness, probeAudio } from '../../apps/worker/src/ffmpeg';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, type TestEnv } from '../helpers/services';

// The whole batch pipeline with the local providers (ffmpeg's flite voices), as `npm start`
// runs it with no keys: 14 sections × 3 variants = 42 tracks.
let env: TestEnv;
let api: TestApi;
let worker: TestWorker;

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local', WORKER_CONCURRENCY_AUDIO_MIX: '2', WORKER_CONCURRENCY_AUDIO_TTS: '2' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

describe('a 14-section × 3-variant batch with the local providers', () => {
  it('completes with 42 playable files on their loudness targets, counters exact throughout', { timeout: 600_000 }, async () => {
    const variants = ['voice_only', 'sleep', 'energy'];
    const created = await createBatch(api, { visionId: 'vision-1', sections: sampleSections(14), variants, voice: 'alloy' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ status: 'pending', total_tracks_expected: 42, tracks_pending: 42, tracks_completed: 0 });
    expect(created.body.audio_set_ids).toHaveLength(3);

    const seenStatuses = new Set<string>();
    const batch = await waitForTerminal(api, created.body.id, {
      timeoutMs: 540_000,
      onPoll: async (b) => {
        seenStatuses.add(b.status);
        expect(b.tracks_completed + b.tracks_failed + b.tracks_cancelled + b.tracks_pending).toBe(42);
        expect(b.tracks.filter((t: any) => t.status === 'completed')).toHaveLength(b.tracks_completed);
        await expectCountersMatchRows(env.databaseUrl, b.id);
      },
    });
    expect(seenStatuses.has('processing')).toBe(true);
    expect(batch).toMatchObject({ status: 'completed', tracks_completed: 42, tracks_failed: 0, tracks_pending: 0, error_message: null });
    expect(batch.completed_at).toBeTruthy();
    await expectCountersMatchRows(env.databaseUrl, batch.id);

    for (const track of batch.tracks) {
      expect(track.status).toBe('completed');
      expect(track.duration_ms).toBeGreaterThan(1000);
      const res = await api.request(track.audio_url);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('audio/mpeg');
      const path = join(env.storageDir, `check-${track.id}.mp3`);
      await writeFile(path, Buffer.from(await res.arrayBuffer()));
      const probe = await probeAudio(path);
      expect(probe.sampleRateHz).toBe(44_100);
      const loudness = await measureLoudness(path);
      const target = getVariant(track.variant_id)!.loudnessTargetLufs;
      expect(Math.abs(loudness.integratedLufs - target), `${track.variant_id} ${track.section_key}: ${loudness.integratedLufs} LUFS`).toBeLessThanOrEqual(1);
      expect(loudness.truePeakDbtp).toBeLessThanOrEqual(-1.5);
    }

    // One voice rendition per section, shared by the 3 variants (local voices ignore
    // delivery instructions), and one provider call for each.
    const client = new pg.Client({ connectionString: env.databaseUrl });
    await client.connect();
    const renditions = (await client.query(`select count(*)::int as n from voice_renditions where status = 'ready'`)).rows[0].n;
    const calls = (await client.query(`select count(*)::int as n from provider_calls where kind = 'speech'`)).rows[0].n;
    await client.end();
    expect(renditions).toBe(14);
    expect(calls).toBe(14);

    // Each set lists its 14 tracks in section order.
    const set = await readJson(await api.request(`/v1/audio/sets/${batch.audio_set_ids[1]}`));
    expect(set.variant_id).toBe('sleep');
    expect(set.tracks.map((t: any) => t.section_key)).toEqual(sampleSections(14).map((s) => s.key));
  });
});
