import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { createTestEnv, lockWaits, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// A batch's JSON (GET /v1/audio/batches/:id; its event stream's snapshot is read the same way)
// carries the batch's counters and every track: README promises the counters equal their
// rows at every commit. They were read in two statements, each in its own snapshot, so a
// track that ended between them was in the list as completed while the counters still said
// pending. Here a transaction commits such a change exactly between the two reads: it holds
// audio_tracks locked, so the second read waits for it.
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  // No workers: every track stays pending until the test moves one.
  env = await createTestEnv();
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

/** Runs `read` while a track of the batch completes between its reads of the batch and of the tracks. */
async function readWhileATrackCompletes<T>(batchId: string, read: () => Promise<T>): Promise<T> {
  const holder = new pg.Client({ connectionString: env.databaseUrl });
  await holder.connect();
  try {
    await holder.query('begin');
    await holder.query('lock table audio_tracks in access exclusive mode');
    const reading = read();
    reading.catch(() => undefined);
    await waitFor(async () => (await lockWaits(env.databaseUrl)) === 1, { what: 'the read of the tracks to wait' });
    const [track] = (await holder.query(`update audio_tracks set status = 'completed', mix_status = 'completed', mixed_file_key = 'k', completed_at = now() where id = (select id from audio_tracks where batch_id = $1 order by id limit 1) returning id`, [batchId])).rows;
    expect(track).toBeDefined();
    await holder.query(`update audio_generation_batches set status = 'processing', tracks_completed = tracks_completed + 1, tracks_pending = tracks_pending - 1 where id = $1`, [batchId]);
    await holder.query('commit');
    return await reading;
  } finally {
    await holder.end();
  }
}

const counted = (batch: any) => ({
  tracks_completed: batch.tracks_completed,
  tracks_pending: batch.tracks_pending,
});
const fromTracks = (batch: any) => ({
  tracks_completed: batch.tracks.filter((t: any) => t.status === 'completed').length,
  tracks_pending: batch.tracks.filter((t: any) => ['pending', 'generating', 'mixing'].includes(t.status)).length,
});

describe("a batch's JSON is one snapshot", () => {
  it('GET /v1/audio/batches/:id: its counters equal the tracks it lists', async () => {
    const created = await createBatch(api, { visionId: 'snapshot', sections: sampleSections(2, 'Snap'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    const batch = await readWhileATrackCompletes(batchId, async () => {
      const res = await api.request(`/v1/audio/batches/${batchId}`);
      expect(res.status).toBe(200);
      return readJson(res);
    });
    expect(counted(batch)).toEqual(fromTracks(batch));
  });
});
