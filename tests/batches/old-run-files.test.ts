import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Job } from 'bullmq';
import { finaliseBatch } from '@soundqueue/shared/rollup/tracks';
import { storageKeys } from '@soundqueue/shared/storage/index';
import { getVariant } from '@soundqueue/shared/variants';
import { createWorkerContext, ffmpegMixer, type Mixer, type Providers, type WorkerContext } from '@soundqueue/worker';
import { speechWith } from '../helpers/providers';
import { processAudioBatch } from '../../apps/worker/src/processors/audio-batch';
import { processAudioMix } from '../../apps/worker/src/processors/audio-mix';
import { processAudioTts } from '../../apps/worker/src/processors/audio-tts';
import { reconcile } from '../../apps/worker/src/reconciler';
import { removeUnnamedTrackFiles } from '../../apps/worker/src/unrecorded-files';
import { readJson, startTestApi, type TestApi } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// A job that was past its run check (or its status check) and still working when the track
// was finished by someone else stores its file before its own completion is refused. The
// track's mix was stored under one key per track (tracks/<batch>/<track>.mp3): a run-1 mix job
// still mixing when run 1 was ended (the reconciler's STUCK_AFTER_MS) and the batch retried
// replaced the file run 2 had completed the track with, and the row's size, duration and the
// served ETag no longer described the file served.
let env: TestEnv;
let api: TestApi;
let ctx: WorkerContext | undefined;
/** While set, the next mix waits for it, then mixes the `sleep` variant: a different file. */
let mixGate: Promise<void> | undefined;
let heldMixes = 0;

const heldMixer: Mixer = {
  ...ffmpegMixer,
  async mixTrack(input) {
    const gate = mixGate;
    if (!gate) return ffmpegMixer.mixTrack(input);
    mixGate = undefined;
    heldMixes += 1;
    await gate;
    return ffmpegMixer.mixTrack({ ...input, variant: getVariant('sleep')! });
  },
};

/** While set, the next speech call waits for it, then says more: a different voice file. */
let speechGate: Promise<void> | undefined;
let heldSpeech = 0;

function heldSpeechProviders(config: TestEnv['config']): Providers {
  return speechWith(config, async (request) => {
    const gate = speechGate;
    if (!gate) return;
    speechGate = undefined;
    heldSpeech += 1;
    await gate;
    return { ...request, text: `${request.text} And a few more words, said more slowly.` };
  });
}

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local' });
  api = await startTestApi(env.config);
});
afterEach(async () => {
  mixGate = undefined;
  heldMixes = 0;
  speechGate = undefined;
  heldSpeech = 0;
  await ctx?.close();
  ctx = undefined;
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

/** What a processor gets from the worker for a job fetched from its queue. */
const runOf = (job: Job) => ({ job, token: undefined, worker: undefined as never, maxRateLimitRestarts: 0 });

async function jobOf(queue: 'audio-tts' | 'audio-mix' | 'audio-batch', id: string): Promise<Job> {
  const job = await ctx!.queues[queue].getJob(id);
  expect(job, id).toBeDefined();
  return job!;
}

/** The track's audio as served, with the row that describes it. */
async function served(trackId: string) {
  const res = await api.request(`/v1/audio/tracks/${trackId}/audio`);
  expect(res.status).toBe(200);
  const bytes = Buffer.from(await res.arrayBuffer());
  const [row] = await queryRows(env.databaseUrl, 'select mixed_file_key, mixed_bytes, duration_ms from audio_tracks where id = $1', [trackId]);
  return { etag: res.headers.get('etag'), bytes, row };
}

/** A batch of one voice_only track, created through the API; no worker runs its jobs. */
async function oneTrackBatch(visionId: string, title: string): Promise<{ batchId: string; track: { id: string } }> {
  const created = await createBatch(api, { visionId, sections: sampleSections(1, title), variants: ['voice_only'], voice: 'alloy' });
  expect(created.status).toBe(201);
  const batchId = created.body.id as string;
  const [track] = await queryRows(env.databaseUrl, 'select id from audio_tracks where batch_id = $1', [batchId]);
  return { batchId, track };
}

/** Runs the mix job with its mix held mid-way, once it is under way; `release` lets it finish. */
async function heldMix(job: Job, what: string) {
  let release!: () => void;
  mixGate = new Promise((resolve) => (release = resolve));
  const mixing = processAudioMix(ctx!, runOf(job));
  await waitFor(() => heldMixes === 1, { what });
  return { release, mixing };
}

const storedTrackFiles = async (batchId: string) => (await readdir(join(env.storageDir, 'tracks', batchId))).sort();

/** The track is served as `before` (row, bytes, ETag), and its file is the batch's only one. */
async function expectServedAsBefore(batchId: string, trackId: string, before: Awaited<ReturnType<typeof served>>): Promise<void> {
  const after = await served(trackId);
  expect(after.row).toEqual(before.row);
  expect(after.bytes.length).toBe(after.row.mixed_bytes);
  expect(after.etag).toBe(before.etag);
  expect(after.bytes.equals(before.bytes)).toBe(true);
  expect(await storedTrackFiles(batchId)).toEqual([before.row.mixed_file_key.split('/').pop()]);
}

describe('a mix job whose completion is refused', () => {
  it("of run 1, still mixing when the batch was retried, leaves run 2's file alone and removes its own", { timeout: 120_000 }, async () => {
    const { batchId, track } = await oneTrackBatch('stale mix', 'Stale');
    ctx = await createWorkerContext(env.config, { mixer: heldMixer });

    // Run 1's jobs, as a worker takes them: the voice is made, and the mix is held mid-way,
    // past its run check.
    expect(await processAudioTts(ctx, runOf(await jobOf('audio-tts', `tts.${track.id}.r1`)))).toHaveProperty('renditionKey');
    const { release, mixing: staleMix } = await heldMix(await jobOf('audio-mix', `mix.${track.id}.r1`), "run 1's mix under way");

    // Run 1 is ended as stuck, the batch retried, and run 2's jobs complete the track.
    await finaliseBatch(ctx.db, batchId, { run: 1, errorType: 'TimeoutError', reason: () => 'stuck', errorMessage: 'stuck' });
    const retry = await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST' });
    expect(retry.status).toBe(202);
    expect((await readJson(retry)).run).toBe(2);
    expect(await processAudioTts(ctx, runOf(await jobOf('audio-tts', `tts.${track.id}.r2`)))).toHaveProperty('renditionKey');
    expect(await processAudioMix(ctx, runOf(await jobOf('audio-mix', `mix.${track.id}.r2`)))).toHaveProperty('durationMs');
    const before = await served(track.id);
    expect(before.bytes.length).toBe(before.row.mixed_bytes);

    // Run 1's mix ends: refused, it changes nothing, not even the stored file.
    release();
    const outcome = await staleMix;
    await expectServedAsBefore(batchId, track.id, before);
    expect(outcome).toEqual({ skipped: "run 1 is no longer the batch's run (2)" });
    await expectCountersMatchRows(env.databaseUrl, batchId);
  });

  it('of a second delivery of the same job (a stalled job run again), finishing after the first completed the track, leaves its file alone', { timeout: 120_000 }, async () => {
    const { batchId, track } = await oneTrackBatch('twice', 'Twice');
    ctx = await createWorkerContext(env.config, { mixer: heldMixer });
    expect(await processAudioTts(ctx, runOf(await jobOf('audio-tts', `tts.${track.id}.r1`)))).toHaveProperty('renditionKey');

    const mixJob = await jobOf('audio-mix', `mix.${track.id}.r1`);
    const { release, mixing: slower } = await heldMix(mixJob, 'the first delivery mixing');
    expect(await processAudioMix(ctx, runOf(mixJob))).toHaveProperty('durationMs');
    const before = await served(track.id);

    release();
    const outcome = await slower;
    await expectServedAsBefore(batchId, track.id, before);
    expect(outcome).toEqual({ skipped: 'track is completed' });
  });

  // Rows keep the key their mix was stored under, so a mix stored before keys carried a mix id
  // is served as it was.
  it('a track mixed before keys carried a mix id is still served from the key its row holds', async () => {
    const { batchId, track } = await oneTrackBatch('older key', 'Older');
    const oldKey = `tracks/${batchId}/${track.id}.mp3`;
    await api.ctx.storage.put(oldKey, Buffer.alloc(1000, 7), 'audio/mpeg');
    await queryRows(env.databaseUrl, `update audio_tracks set status = 'completed', mix_status = 'completed', mixed_file_key = $2, mixed_bytes = 1000 where id = $1`, [track.id, oldKey]);
    const { bytes } = await served(track.id);
    expect(bytes.equals(Buffer.alloc(1000, 7))).toBe(true);
  });
});

// The voice file: a rendition is stored under a key of its own hash, by the one job holding its
// claim. A run-1 speech job stuck in its provider call long enough for run 1 to be ended as
// stuck has stopped renewing its claim too (its worker starved, the database out of reach), so
// run 2's job takes the claim over, synthesizes and marks the rendition ready; the run-1 job
// then stored its own synthesis over it, and the rendition's duration and loudness (which every
// mix of the voice plans with) described another file.
describe('a speech job whose rendition claim was taken over', () => {
  it("of run 1, answered after run 2 made the voice, leaves run 2's voice file alone and removes its own", { timeout: 120_000 }, async () => {
    const { batchId, track } = await oneTrackBatch('stale voice', 'Voice');
    // A lease long enough that the held job's renewals do not run during the test.
    const config = { ...env.config, WORKER_LOCK_DURATION_MS: 600_000 };
    ctx = await createWorkerContext(config, { providers: heldSpeechProviders(config) });

    let release!: () => void;
    speechGate = new Promise((resolve) => (release = resolve));
    const staleSpeech = processAudioTts(ctx, runOf(await jobOf('audio-tts', `tts.${track.id}.r1`)));
    await waitFor(() => heldSpeech === 1, { what: "run 1's speech call under way" });
    // Its claim lapses (not renewed for a lease), run 1 is ended as stuck and retried.
    await queryRows(env.databaseUrl, `update voice_renditions set claimed_at = now() - interval '1 hour' where status = 'generating'`);
    await finaliseBatch(ctx.db, batchId, { run: 1, errorType: 'TimeoutError', reason: () => 'stuck', errorMessage: 'stuck' });
    const retry = await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST' });
    expect(retry.status).toBe(202);
    expect(await processAudioTts(ctx, runOf(await jobOf('audio-tts', `tts.${track.id}.r2`)))).toHaveProperty('renditionKey');
    const [rendition] = await queryRows(env.databaseUrl, `select key_hash, storage_key, duration_ms, status from voice_renditions`);
    expect(rendition.status).toBe('ready');
    const voiceBefore = await readFile(join(env.storageDir, rendition.storage_key));

    release();
    expect(await staleSpeech).toEqual({ skipped: "run 1 is no longer the batch's run (2)" });
    const [after] = await queryRows(env.databaseUrl, `select key_hash, storage_key, duration_ms, status from voice_renditions`);
    expect(after).toEqual(rendition);
    const voiceAfter = await readFile(join(env.storageDir, after.storage_key));
    expect(voiceAfter.length).toBe(voiceBefore.length);
    expect(voiceAfter.equals(voiceBefore)).toBe(true);
    const renditionDir = dirname(join(env.storageDir, after.storage_key));
    expect(await readdir(renditionDir)).toEqual([basename(after.storage_key)]);

    // Run 2 mixes the voice its rendition describes.
    expect(await processAudioMix(ctx, runOf(await jobOf('audio-mix', `mix.${track.id}.r2`)))).toHaveProperty('durationMs');
    await expectCountersMatchRows(env.databaseUrl, batchId);
  });
});

// A voice is stored under its claim's key (storageKeys.rendition) before the rendition is
// marked ready. A worker that dies in between leaves the file, and its claim on the row; the
// claim lapses, and the next job needing the voice (the same job delivered again, or another
// track's) takes it over and stores its own. Nothing else knows the dead claim's key.
describe('a voice a dead worker stored under its claim and never recorded', () => {
  it('is removed when another job takes the lapsed claim over', { timeout: 120_000 }, async () => {
    const { batchId, track } = await oneTrackBatch('dead voice', 'Dead voice');
    // A lease long enough that the held job's renewals do not run during the test.
    const config = { ...env.config, WORKER_LOCK_DURATION_MS: 600_000 };
    ctx = await createWorkerContext(config, { providers: heldSpeechProviders(config) });
    const job = await jobOf('audio-tts', `tts.${track.id}.r1`);

    // The first delivery holds the claim; its worker is taken for dead after storing the voice.
    let release!: () => void;
    speechGate = new Promise((resolve) => (release = resolve));
    const dead = processAudioTts(ctx, runOf(job));
    await waitFor(() => heldSpeech === 1, { what: 'the first delivery synthesizing' });
    const [claim] = await queryRows(env.databaseUrl, `select key_hash, claim_token from voice_renditions where status = 'generating'`);
    const deadKey = storageKeys.rendition(claim.key_hash, claim.claim_token, 'wav');
    await api.ctx.storage.put(deadKey, Buffer.alloc(4000, 1), 'audio/wav');
    await queryRows(env.databaseUrl, `update voice_renditions set claimed_at = now() - interval '1 hour' where status = 'generating'`);

    // The job delivered again (its worker lost) takes the lapsed claim over and makes the voice.
    expect(await processAudioTts(ctx, runOf(job))).toHaveProperty('renditionKey');
    const [ready] = await queryRows(env.databaseUrl, `select storage_key, status from voice_renditions`);
    expect(ready.status).toBe('ready');
    expect(await api.ctx.storage.stat(deadKey)).toBeNull();
    const renditionDir = dirname(join(env.storageDir, ready.storage_key));
    expect(await readdir(renditionDir)).toEqual([basename(ready.storage_key)]);

    // Were the first delivery alive after all, what it stores is removed by itself.
    release();
    await dead;
    expect(await readdir(renditionDir)).toEqual([basename(ready.storage_key)]);
    expect(await processAudioMix(ctx, runOf(await jobOf('audio-mix', `mix.${track.id}.r1`)))).toHaveProperty('durationMs');
    await expectCountersMatchRows(env.databaseUrl, batchId);
  });
});

// A worker that dies (killed, out of memory, its host lost) after storing a mix and before
// recording it leaves the file under its attempt's own key (storageKeys.track), which no later
// attempt writes: the next attempt stores and records its own. Nothing else names the dead
// attempt's key, so the batch's end removes every file under tracks/<batch>/ that no track row
// of the batch names.
describe("a mix a dead worker stored and never recorded", () => {
  /** What a dead attempt leaves: a stored mix under a key of its own, no row naming it. */
  async function deadAttemptMix(batchId: string, trackId: string): Promise<string> {
    const key = storageKeys.track(batchId, trackId, randomUUID());
    await api.ctx.storage.put(key, Buffer.alloc(2000, 3), 'audio/mpeg');
    return key;
  }

  it("is removed when the batch's root ends it; the track's own file stays", { timeout: 120_000 }, async () => {
    const { batchId, track } = await oneTrackBatch('dead mix', 'Dead');
    ctx = await createWorkerContext(env.config);
    expect(await processAudioTts(ctx, runOf(await jobOf('audio-tts', `tts.${track.id}.r1`)))).toHaveProperty('renditionKey');
    const dead = await deadAttemptMix(batchId, track.id);
    // The job, retried after its worker was lost, mixes and records its own file.
    expect(await processAudioMix(ctx, runOf(await jobOf('audio-mix', `mix.${track.id}.r1`)))).toHaveProperty('durationMs');
    const before = await served(track.id);
    expect(await storedTrackFiles(batchId)).toHaveLength(2);

    expect(await processAudioBatch(ctx, runOf(await jobOf('audio-batch', `batch.${batchId}.r1`)))).toEqual({ status: 'completed' });
    expect(await storedTrackFiles(batchId)).toEqual([before.row.mixed_file_key.split('/').pop()]);
    expect(await api.ctx.storage.stat(dead)).toBeNull();
    const after = await served(track.id);
    expect(after.bytes.equals(before.bytes)).toBe(true);
  });

  it('is removed when the reconciler ends the stuck run', { timeout: 120_000 }, async () => {
    const { batchId, track } = await oneTrackBatch('dead mix stuck', 'Stuck');
    ctx = await createWorkerContext({ ...env.config, STUCK_AFTER_MS: 1, RECONCILE_GRACE_MS: 0 });
    expect(await processAudioTts(ctx, runOf(await jobOf('audio-tts', `tts.${track.id}.r1`)))).toHaveProperty('renditionKey');
    const dead = await deadAttemptMix(batchId, track.id);
    await queryRows(env.databaseUrl, `update audio_generation_batches set started_at = now() - interval '1 hour', updated_at = now() - interval '1 hour' where id = $1`, [batchId]);

    expect((await reconcile(ctx)).batchesTimedOut).toContain(batchId);
    expect(await api.ctx.storage.stat(dead)).toBeNull();
    await expect(readdir(join(env.storageDir, 'tracks', batchId))).resolves.toEqual([]);
  });

  it("is left alone by the end of a run the batch has moved on from: the next run's job may be about to record it", { timeout: 120_000 }, async () => {
    const { batchId, track } = await oneTrackBatch('dead mix moved on', 'Moved');
    ctx = await createWorkerContext(env.config);
    await finaliseBatch(ctx.db, batchId, { run: 1, errorType: 'TimeoutError', reason: () => 'stuck', errorMessage: 'stuck' });
    const retry = await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST' });
    expect(retry.status).toBe(202);
    // Run 2's mix stored, its completion not recorded yet; run 1's end is looked at late.
    const storing = await deadAttemptMix(batchId, track.id);
    await removeUnnamedTrackFiles(ctx, batchId, 1);
    expect(await api.ctx.storage.stat(storing)).not.toBeNull();
  });
});
