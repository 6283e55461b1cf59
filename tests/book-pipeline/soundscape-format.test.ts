import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeAudio, runFfmpeg } from '../../apps/worker/src/ffmpeg';
import { createProviders } from '../../apps/worker/src/providers';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { expectBookCountsMatchRows, postBook, waitForBook } from '../helpers/books';
import { createTestEnv, type TestEnv } from '../helpers/services';

// A soundscape provider may answer WAV (SoundscapeResult's format; the Replicate provider
// takes either, since a model may ignore output_format). The book's soundscapes are served
// as MP3 (README: "the soundscape MP3", Content-Type audio/mpeg), so a WAV answer must not
// be stored and served as it came.
let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let scratch: string;
let wav: Buffer;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'sq-wav-'));
  const path = join(scratch, 'scape.wav');
  await runFfmpeg(['-v', 'error', '-f', 'lavfi', '-i', 'anoisesrc=d=3:c=pink:a=0.1', '-ar', '44100', '-ac', '2', '-y', path]);
  wav = await readFile(path);
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '3' });
  api = await startTestApi(env.config);
  const real = createProviders(env.config);
  worker = await startTestWorker(env.config, {
    providers: { ...real, soundscape: { name: 'replicate', generate: async () => ({ audio: wav, format: 'wav', usage: { seconds: 3 }, costUsd: 0.01 }) } },
  });
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('a soundscape the provider answers as WAV', () => {
  it('is stored and served as MP3, as every soundscape is', async () => {
    const created = await postBook(api, { title: 'Wave', pages: ['The stormy sea at night.', 'Waves crashed on the rocks.'] });
    const book = await waitForBook(api, created.body.bookId);
    expect(book).toMatchObject({ status: 'ready', stats: { soundscapesGenerated: 1 } });
    await expectBookCountsMatchRows(env.databaseUrl, book.bookId);
    const timeline = await readJson(await api.request(`/v1/books/${book.bookId}/scenes`, { user: 'reader' }));
    const res = await api.request(timeline.scenes[0].soundscape.audioUrl, { user: 'reader' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('audio/mpeg');
    const body = Buffer.from(await res.arrayBuffer());
    // Before: the WAV's own bytes (RIFF…WAVE) under an MP3's name and Content-Type.
    expect(body.toString('latin1', 0, 4)).not.toBe('RIFF');
    const path = join(scratch, 'served.mp3');
    await writeFile(path, body);
    const probe = await probeAudio(path);
    expect(probe.codec).toBe('mp3');
    expect(Math.abs(probe.durationMs - 3_000)).toBeLessThan(200);
    expect(timeline.scenes[0].soundscape.durationMs).toBe(probe.durationMs);
  });
});
