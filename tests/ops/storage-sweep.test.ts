import { randomUUID } from 'node:crypto';
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sweepStorage } from '../../apps/worker/src/storage-sweep';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// The storage sweep removes stored files no row uses once they are older than the grace, and
// nothing else: not a file a row uses however old, not a young one (its job may be about to
// record it), not a file whose key is not of ours.

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;

beforeAll(async () => {
  env = await createTestEnv({ STORAGE_SWEEP_GRACE_SECONDS: '3600' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

const TWO_HOURS_AGO = () => new Date(Date.now() - 2 * 3_600_000);
const pathOf = (key: string) => join(env.config.STORAGE_DIR, key);

/** A stored file, made `age` old. */
async function stored(key: string, age: Date | null = TWO_HOURS_AGO()): Promise<string> {
  await mkdir(dirname(pathOf(key)), { recursive: true });
  await writeFile(pathOf(key), 'audio');
  if (age) await utimes(pathOf(key), age, age);
  return key;
}

const exists = async (key: string) => (await worker.ctx.storage.stat(key)) !== null;

describe('the storage sweep', () => {
  it('removes old files no row uses, and keeps used, young and foreign ones', async () => {
    // A batch whose first track names its mix; no worker mixes here (the rows are set by hand).
    const created = await createBatch(api, { visionId: 'sweep', sections: sampleSections(2, 'sweep'), variants: ['voice_only'], voice: 'alloy' });
    const batchId = created.body.id as string;
    const [track] = await queryRows(env.databaseUrl, 'select id from audio_tracks where batch_id = $1 order by section_index limit 1', [batchId]);
    const used = await stored(`tracks/${batchId}/${track.id}.${randomUUID()}.mp3`);
    await queryRows(env.databaseUrl, 'update audio_tracks set mixed_file_key = $2 where id = $1', [track.id, used]);
    // What a worker that died between storing and recording leaves, and a later attempt's.
    const orphan = await stored(`tracks/${batchId}/${track.id}.${randomUUID()}.mp3`);
    const young = await stored(`tracks/${batchId}/${track.id}.${randomUUID()}.mp3`, null);
    // A write whose worker was killed mid-copy.
    const temporary = await stored(`tracks/${batchId}/${track.id}.${randomUUID()}.mp3.${randomUUID()}.tmp`);
    // Not a key of ours: left alone however old.
    const foreign = await stored('tracks/README.txt');

    // A voice: the rendition row uses one claim's file; a lapsed claim's file is nobody's.
    const hash = 'ab'.repeat(32);
    const voice = await stored(`renditions/ab/${hash}.${randomUUID()}.mp3`);
    const lapsedVoice = await stored(`renditions/ab/${hash}.${randomUUID()}.mp3`);
    const unknownVoice = await stored(`renditions/cd/${'cd'.repeat(32)}.${randomUUID()}.mp3`);
    await queryRows(
      env.databaseUrl,
      `insert into voice_renditions (key_hash, status, provider, voice_id, model, storage_key, characters) values ($1, 'ready', 'local', 'alloy', 'flite', $2, 5)`,
      [hash, voice],
    );
    // A soundscape of a book that has no such soundscape row.
    const soundscape = await stored(`soundscapes/${randomUUID()}/${randomUUID()}.${randomUUID()}.mp3`);

    const report = await sweepStorage(worker.ctx);
    expect(report.removed.sort()).toEqual([orphan, temporary, lapsedVoice, unknownVoice, soundscape].sort());
    for (const key of [used, young, foreign, voice]) expect(await exists(key), key).toBe(true);
    for (const key of [orphan, lapsedVoice, unknownVoice, soundscape]) expect(await exists(key), key).toBe(false);
    expect((await worker.ctx.storage.entries(`tracks/${batchId}/`)).some((e) => e.temporary)).toBe(false);

    // Once the young file is past the grace, it goes too; the used one never does.
    const later = await sweepStorage(worker.ctx, Date.now() + 2 * 3_600_000);
    expect(later.removed).toEqual([young]);
    expect(await exists(used)).toBe(true);
  });

  it('runs on a schedule of the maintenance queue, as the reconciler does', async () => {
    expect(await worker.ctx.queues.maintenance.getJobScheduler('sweep-storage')).toMatchObject({ every: env.config.STORAGE_SWEEP_INTERVAL_MS });
    const orphan = await stored(`soundscapes/${randomUUID()}/${randomUUID()}.${randomUUID()}.mp3`);
    const job = await worker.ctx.queues.maintenance.add('sweep-storage', { task: 'sweep-storage' });
    const done = await waitFor(async () => ((await job.isCompleted()) ? await worker.ctx.queues.maintenance.getJob(job.id!) : null), { what: 'the sweep job' });
    expect(done.returnvalue).toMatchObject({ removed: 1 });
    expect(await exists(orphan)).toBe(false);
  });
});
