import { copyFile, readdir, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MixingError } from '@soundqueue/shared/errors';
import type { Mixer } from '@soundqueue/worker';
import type { MixInput } from '../../apps/worker/src/audio/mix';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// The worker context's mixer seam (apps/worker/src/audio/mixer.ts), which benchmark 1 relies
// on: every voice measurement and every mix goes through ctx.mixer, the measurement is what
// the rendition stores and what each mix of that voice is given, and a mixer's error ends
// the track the way ffmpeg's would.

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
const measured: string[] = [];
const mixes: MixInput[] = [];

const recordingMixer: Mixer = {
  async measureVoice(path) {
    measured.push(path);
    return { loudnessLufs: -23.5, durationMs: 4321 };
  },
  async mixTrack(input) {
    mixes.push(input);
    if (input.variant.id === 'energy') {
      // A mixer that fails half way leaves a partial output behind, as ffmpeg can.
      await writeFile(input.outPath, 'half a mix');
      throw new MixingError('the test mixer refuses energy', { retryable: false });
    }
    await copyFile(input.voicePath, input.outPath);
    return { durationMs: 1234 };
  },
};

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config, { mixer: recordingMixer });
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

describe('the mixer seam', () => {
  it('measures each new voice once, hands the measurement to every mix, and fails a track the mixer refuses', { timeout: 120_000 }, async () => {
    const created = await createBatch(api, { visionId: 'seam', sections: sampleSections(2), variants: ['voice_only', 'sleep', 'energy'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch).toMatchObject({ status: 'partial_success', tracks_completed: 4, tracks_failed: 2 });
    await expectCountersMatchRows(env.databaseUrl, batch.id);

    // The local voice ignores instructions: one rendition per section, measured once each.
    expect(measured).toHaveLength(2);
    const renditions = await queryRows(env.databaseUrl, 'select loudness_lufs, duration_ms from voice_renditions');
    expect(renditions).toEqual([
      { loudness_lufs: -23.5, duration_ms: 4321 },
      { loudness_lufs: -23.5, duration_ms: 4321 },
    ]);
    expect(mixes).toHaveLength(6);
    for (const mix of mixes) expect(mix).toMatchObject({ voiceLoudness: -23.5, voiceDurationMs: 4321 });
    // With local storage the mixer reads the stored voice in place: no copy per mix.
    for (const mix of mixes) expect(mix.voicePath.startsWith(`${resolve(env.config.STORAGE_DIR)}/renditions/`)).toBe(true);
    // Nothing is left in the worker's scratch directory: outputs were moved into storage,
    // the failed mixes' partial outputs removed, the voices' scratch files moved too.
    expect(await readdir(worker.ctx.scratchDir)).toEqual([]);

    const completed = batch.tracks.filter((t: any) => t.status === 'completed');
    expect(completed.map((t: any) => t.duration_ms)).toEqual([1234, 1234, 1234, 1234]);
    const failed = batch.tracks.filter((t: any) => t.status === 'failed');
    expect(failed.map((t: any) => t.variant_id)).toEqual(['energy', 'energy']);
    for (const t of failed) expect(t).toMatchObject({ error_type: 'MixingError', error_message: 'Mixing: the test mixer refuses energy' });

    // What the mixer wrote is what the track serves: here, the voice itself.
    const track = completed[0];
    const res = await api.request(track.audio_url);
    expect(res.status).toBe(200);
    const [rendition] = await queryRows(env.databaseUrl, 'select t.voice_file_key from audio_tracks t where t.id = $1', [track.id]);
    const voice = await worker.ctx.storage.read(rendition.voice_file_key);
    const chunks: Buffer[] = [];
    for await (const chunk of voice) chunks.push(chunk as Buffer);
    expect(Buffer.from(await res.arrayBuffer()).equals(Buffer.concat(chunks))).toBe(true);
  });
});
