import { readdir } from 'node:fs/promises';
import { readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { postBook, waitForBook } from '../helpers/books';
import { expectBatchSettled, expectBookSettled, openDb, type TestDb } from '../helpers/chaos';
import { openReliabilityLog } from '../helpers/reliability-log';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { fourSettingBook } from '../fixtures/books';
import { defaultGeminiAnswer, startGeminiServer, type GeminiFake } from '../fakes/gemini-server';
import { probeAudio } from '../fakes/http-server';
import { fakeProviderEnv } from '../fakes/provider-env';
import { startOpenAiSpeechServer, type OpenAiSpeechFake, type SpeechBehaviour } from '../fakes/openai-speech-server';
import { startReplicateServer, type ReplicateBehaviour, type ReplicateFake } from '../fakes/replicate-server';

// Every fault the provider fakes can produce, through the real SDKs and the real workers:
// 429 with Retry-After, 500, a call that never answers (PROVIDER_TIMEOUT_MS), audio cut off
// mid-transfer, bytes that are not audio, an HTML page, a 400, and analysis answers that are
// not the JSON asked for. Faults that clear are retried as designed and the work completes;
// faults that do not clear end with a clear message on the row, and invalid audio is never
// stored as completed.
const log = openReliabilityLog('provider-faults');

const TIMEOUT_MS = 1_500;
let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let db: TestDb;
let speech: OpenAiSpeechFake;
let gemini: GeminiFake;
let replicate: ReplicateFake;
let replicateDecide: (method: string, path: string) => ReplicateBehaviour | undefined = () => undefined;

// A speech text carrying "[once:<fault>]" gets that fault on its first request only;
// "[always:<fault>]" on every request.
const seenTexts = new Map<string, number>();
function speechFault(input: string): SpeechBehaviour | undefined {
  const n = (seenTexts.get(input) ?? 0) + 1;
  seenTexts.set(input, n);
  const match = /\[(once|always):([a-z0-9]+)\]/.exec(input);
  if (!match || (match[1] === 'once' && n > 1)) return undefined;
  const fault = match[2]!;
  if (fault === 'ratelimit') return { kind: 'rate-limited', retryAfterSeconds: 1 };
  if (fault === 'error500') return 'server-error';
  if (fault === 'badrequest') return { kind: 'bad-request', message: 'Input contains a phrase this voice cannot say.' };
  return fault as SpeechBehaviour;
}

beforeAll(async () => {
  speech = await startOpenAiSpeechServer({ decide: speechFault });
  gemini = await startGeminiServer();
  replicate = await startReplicateServer({ decide: (method, path) => replicateDecide(method, path) });
  env = await createTestEnv({
    ...fakeProviderEnv({ speech: speech, gemini: gemini, replicate: replicate }),
    REPLICATE_POLL_INTERVAL_MS: '50',
    SOUNDSCAPE_SECONDS: '3',
    PROVIDER_TIMEOUT_MS: String(TIMEOUT_MS),
    WORKER_CONCURRENCY_AUDIO_TTS: '4',
  });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
  db = openDb(env.databaseUrl);
});

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await db?.close();
  await env?.cleanup();
  await Promise.all([speech?.close(), gemini?.close(), replicate?.close()]);
  log.end();
});

const sectionsWith = (tags: string[]) =>
  tags.map((tag, i) => ({ key: `s${i}-${tag.replace(/[^a-z0-9]/g, '') || 'ok'}`, text: `Section ${i} of the faults vision ${tag}, spoken calmly.` }));

async function ttsJob(trackId: string) {
  return api.ctx.queues['audio-tts'].getJob(`tts.${trackId}.r1`);
}

describe('speech provider faults', () => {
  it('that clear after one try are retried as designed and every track completes', async () => {
    await log.scenario(
      'OpenAI speech: 429 (Retry-After 1 s), 500, no answer, truncated MP3, garbage bytes, HTML page — each once',
      'the speech fake answered each fault once per text, then succeeded',
      async (r) => {
        const faults = ['ratelimit', 'error500', 'hang', 'truncated', 'garbage', 'html'];
        const sections = sectionsWith(faults.map((f) => `[once:${f}]`));
        const before = speech.requests.length;
        const started = Date.now();
        const created = await createBatch(api, { visionId: 'faults-once', sections, variants: ['voice_only'], voice: 'alloy' });
        expect(created.status).toBe(201);
        const batch = await waitForTerminal(api, created.body.id, { timeoutMs: 120_000 });
        const facts = await expectBatchSettled(db, env.databaseUrl, batch.id, faults.length);
        expect(batch.status).toBe('completed');
        expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
        // Each text: one failed request, one good one.
        expect(speech.requests.length - before).toBe(faults.length * 2);
        for (const track of batch.tracks) {
          const job = await ttsJob(track.id);
          const fault = faults[Number(/^s(\d+)/.exec(track.section_key)![1])];
          // A 429 waits out Retry-After without using an attempt; the others use one.
          expect(job?.attemptsMade, fault).toBe(fault === 'ratelimit' ? 1 : 2);
          expect(track.attempts, fault).toBe(2);
        }
        r.held(`${facts.completed}/${facts.total} tracks completed after exactly one retry each (${faults.length * 2} provider calls)`);
        r.held('the 429 used no attempt (job attemptsMade 1) and waited its Retry-After of 1 s; the others used 2 attempts');
        r.measure('faults', faults.join(', '));
        r.measure('speech calls', faults.length * 2);
        r.measure('batch seconds', Math.round((Date.now() - started) / 100) / 10);
      },
    );
  }, 180_000);

  it('that never clear fail with clear messages after the designed attempts, and no invalid audio is kept', async () => {
    await log.scenario(
      'OpenAI speech: 500, no answer, truncated MP3, garbage bytes, HTML page, 400 — on every try',
      'the speech fake answered the same fault on every request for six of seven texts',
      async (r) => {
        const faults = ['error500', 'hang', 'truncated', 'garbage', 'html', 'badrequest'];
        const sections = [...sectionsWith(faults.map((f) => `[always:${f}]`)), { key: 'fine', text: 'A section that speaks without trouble.' }];
        const created = await createBatch(api, { visionId: 'faults-always', sections, variants: ['voice_only'], voice: 'nova' });
        expect(created.status).toBe(201);
        const batch = await waitForTerminal(api, created.body.id, { timeoutMs: 150_000 });
        const facts = await expectBatchSettled(db, env.databaseUrl, batch.id, sections.length);
        expect(batch).toMatchObject({ status: 'partial_success', tracks_completed: 1, tracks_failed: 6 });
        expect(batch.error_message).toMatch(/^6 of 7 tracks failed/);
        const expected: Record<string, { message: RegExp; attempts: number }> = {
          error500: { message: /^Speech: OpenAI speech API answered 500: The server had an error/, attempts: 3 },
          hang: { message: new RegExp(`^Speech: OpenAI speech API did not answer within ${TIMEOUT_MS} ms`), attempts: 3 },
          truncated: { message: /^Speech: OpenAI speech API could not be reached or the transfer broke off/, attempts: 3 },
          garbage: { message: /^Speech: OpenAI speech API answered 200 \(audio\/mpeg\) but the 4096 bytes are not MP3/, attempts: 3 },
          html: { message: /^Speech: OpenAI speech API answered 200 with text\/html instead of audio/, attempts: 3 },
          badrequest: { message: /^Speech: OpenAI speech API answered 400: Input contains a phrase this voice cannot say\./, attempts: 1 },
        };
        for (const track of batch.tracks.filter((t: any) => t.status === 'failed')) {
          const fault = faults[Number(/^s(\d+)/.exec(track.section_key)![1])]!;
          expect(track.error_type, fault).toBe('SpeechGenerationError');
          expect(track.error_message, fault).toMatch(expected[fault]!.message);
          expect(track.attempts, fault).toBe(expected[fault]!.attempts);
          // Bull Board shows the same reason the row carries.
          const job = await ttsJob(track.id);
          expect(await job?.getState(), fault).toBe('failed');
          expect(track.error_message, fault).toContain(String(job?.failedReason).replace(/^SpeechGenerationError: /, ''));
          r.held(`${fault}: failed after ${track.attempts} attempt(s): "${String(track.error_message).slice(0, 110)}"`);
        }
        // Nothing invalid was kept: one ready rendition (the fine text), no claim left, no
        // mixed file for a failed track.
        const renditions = await db.rows(`select status from voice_renditions where key_hash in (select rendition_key from audio_tracks where batch_id = $1) or status = 'generating'`, [batch.id]);
        expect(renditions).toEqual([{ status: 'ready' }]);
        const failedFiles = await db.one(`select count(*)::int as n from audio_tracks where batch_id = $1 and status = 'failed' and (mixed_file_key is not null or rendition_key is not null)`, [batch.id]);
        expect(failedFiles.n).toBe(0);
        r.held(`batch partial_success with counters equal rows (${facts.completed} completed, ${facts.failed} failed); error_message "${String(batch.error_message).slice(0, 60)}…"`);
        r.held('no rendition or mixed file recorded for any failed track; no claim left behind');
        r.measure('tracks failed', facts.failed);
        r.measure('tracks completed', facts.completed);
      },
    );
  }, 200_000);
});

describe('analysis provider faults', () => {
  it('that clear are retried and the book is analysed completely', async () => {
    await log.scenario(
      'Gemini analysis: 429 (Retry-After 1 s), 500, no answer, prose instead of JSON, JSON missing fields — each once',
      'the Gemini fake answered five requests with those faults, then succeeded',
      async (r) => {
        const before = gemini.requests.length;
        gemini.script([{ kind: 'rate-limited', retryAfterSeconds: 1 }, 'server-error', 'hang', 'not-json', 'missing-fields']);
        const created = await postBook(api, { title: 'Faulty analysis', pages: fourSettingBook().slice(0, 8) });
        expect(created.status).toBe(202);
        const book = await waitForBook(api, created.body.bookId, 'reader', 150_000);
        const facts = await expectBookSettled(db, env.databaseUrl, book.bookId);
        expect(book.status).toBe('ready');
        expect(book.errors).toBeUndefined();
        expect(facts.analyzed).toBe(4);
        const calls = gemini.requests.length - before;
        expect(calls).toBe(4 + 5);
        r.held(`book ready: ${facts.analyzed}/${facts.spreads} spreads analysed, no errors; ${calls} analysis calls = 4 spreads + 5 faults retried`);
        r.measure('analysis calls', calls);
        r.measure('soundscapes', facts.soundscapesCompleted);
      },
    );
  }, 180_000);

  it('that never clear fail the spread with a clear processing error (malformed JSON on every try)', async () => {
    await log.scenario(
      'Gemini analysis: prose instead of JSON on every try (1-spread book); JSON missing fields on every try (1 of 2 spreads)',
      'the Gemini fake answered text that is not JSON three times; then answered schema-less JSON for one spread every time',
      async (r) => {
        gemini.script(['not-json', 'not-json', 'not-json']);
        const lone = await postBook(api, { title: 'Unreadable', pages: fourSettingBook().slice(0, 2) });
        const failed = await waitForBook(api, lone.body.bookId, 'reader', 120_000);
        await expectBookSettled(db, env.databaseUrl, failed.bookId);
        expect(failed).toMatchObject({ success: false, status: 'failed', error: 'All spreads failed to process' });
        expect(failed.errors).toHaveLength(1);
        expect(failed.errors[0]).toMatchObject({ spreadIndex: 0, pages: '1-2', errorType: 'ContentAnalysisError', attempt: 3 });
        expect(failed.errors[0].message).toMatch(/^Gemini answered text that is not JSON/);
        expect(failed.errors[0].timestamp).toBeTruthy();
        r.held(`1-spread book failed, "All spreads failed to process"; error after attempt 3: "${String(failed.errors[0].message).slice(0, 70)}…"`);

        const pages = fourSettingBook().slice(0, 4);
        pages[3] = `${pages[3]} GARBLED-SPREAD`;
        gemini.answer = (prompt) => {
          const current = /Current spread[^\n]*\n"""\n([\s\S]*?)\n"""/.exec(prompt)?.[1] ?? prompt;
          return current.includes('GARBLED-SPREAD') ? { setting: 'somewhere' } : defaultGeminiAnswer(prompt);
        };
        try {
          const half = await postBook(api, { title: 'Half readable', pages });
          const book = await waitForBook(api, half.body.bookId, 'reader', 120_000);
          const facts = await expectBookSettled(db, env.databaseUrl, book.bookId);
          expect(book).toMatchObject({ success: true, status: 'ready', warning: 'Some spreads failed to process' });
          expect(facts).toMatchObject({ analyzed: 1, failedSpreads: 1 });
          expect(book.errors).toHaveLength(1);
          expect(book.errors[0]).toMatchObject({ spreadIndex: 1, pages: '3-4', errorType: 'ContentAnalysisError', attempt: 3 });
          expect(book.errors[0].message).toMatch(/^Gemini's analysis does not match the schema: /);
          r.held(`2-spread book ready with warning "${book.warning}"; spread 1 error: "${String(book.errors[0].message).slice(0, 80)}…"`);
        } finally {
          gemini.answer = defaultGeminiAnswer;
        }
      },
    );
  }, 180_000);
});

describe('soundscape provider faults', () => {
  it('that clear are retried and the soundscape is made once', async () => {
    await log.scenario(
      'Replicate: 500 on create, 429 (Retry-After 1 s) on create, output file cut off mid-download — each once',
      'the Replicate fake answered those faults on the first three predictions, then succeeded',
      async (r) => {
        replicate.script(['server-error', { kind: 'rate-limited', retryAfterSeconds: 1 }, 'truncated']);
        const created = await postBook(api, { title: 'Faulty sound', pages: fourSettingBook().slice(0, 2) });
        const book = await waitForBook(api, created.body.bookId, 'reader', 120_000);
        const facts = await expectBookSettled(db, env.databaseUrl, book.bookId);
        expect(book).toMatchObject({ status: 'ready', stats: { soundscapesGenerated: 1 } });
        expect(book.errors).toBeUndefined();
        const [sound] = await db.rows(`select * from soundscapes where book_id = $1`, [book.bookId]);
        expect(sound.status).toBe('completed');
        // The 500 and the cut-off download used attempts; the 429 did not.
        expect(sound.attempts).toBe(4);
        r.held(`book ready with ${facts.soundscapesCompleted}/${facts.scenes} soundscape after 4 tries (500, 429, truncated, success) within 3 attempts`);
        r.measure('soundscape tries', sound.attempts);
      },
    );
  }, 180_000);

  it('that never clear (garbage audio on every download) fail the soundscape clearly and store nothing', async () => {
    await log.scenario(
      'Replicate: the output file is not audio on every try',
      'the Replicate fake served non-audio bytes (audio/mpeg content-type) for every prediction output',
      async (r) => {
        replicateDecide = (method, path) => (method === 'GET' && path.startsWith('/files/') ? 'garbage' : undefined);
        try {
          const created = await postBook(api, { title: 'Noise', pages: fourSettingBook().slice(0, 2) });
          const book = await waitForBook(api, created.body.bookId, 'reader', 120_000);
          const facts = await expectBookSettled(db, env.databaseUrl, book.bookId);
          expect(book).toMatchObject({ success: true, status: 'ready', warning: 'Some soundscapes failed to generate' });
          expect(facts.soundscapesCompleted).toBe(0);
          expect(book.errors).toHaveLength(1);
          expect(book.errors[0]).toMatchObject({ errorType: 'SoundscapeGenerationError', attempt: 3 });
          expect(book.errors[0].message).toMatch(/output \(4096 bytes from .*\) is not MP3 or WAV audio$/);
          const [sound] = await db.rows(`select * from soundscapes where book_id = $1`, [book.bookId]);
          expect(sound).toMatchObject({ status: 'failed', file_key: null });
          expect(sound.error_message).toBe(book.errors[0].message);
          const scenes = await readJson(await api.request(`/v1/books/${book.bookId}/scenes`, { user: 'reader' }));
          expect(scenes.scenes[0].soundscape).toMatchObject({ status: 'failed', audioUrl: null });
          expect((await api.request(`/v1/soundscapes/${sound.id}/audio`, { user: 'reader' })).status).toBe(409);
          r.held(`book ready with warning "${book.warning}"; soundscape failed after 3 attempts: "${String(book.errors[0].message).slice(0, 90)}…"`);
          r.held('the failed soundscape has no file; its audio URL answers 409, not a broken file');
        } finally {
          replicateDecide = () => undefined;
        }
      },
    );
  }, 180_000);
});

describe('stored audio after every fault', () => {
  it('is only ever audio that decodes, and every completed row points at a file', async () => {
    await log.scenario(
      'Audit of storage after all provider faults',
      'nothing (reads every stored file back through ffmpeg/ffprobe)',
      async (r) => {
        const files: string[] = [];
        const walk = async (dir: string) => {
          for (const entry of await readdir(dir, { withFileTypes: true })) {
            const path = join(dir, entry.name);
            if (entry.isDirectory()) await walk(path);
            else files.push(relative(env.storageDir, path));
          }
        };
        await walk(env.storageDir);
        for (const file of files) {
          const probe = await probeAudio(await readFile(join(env.storageDir, file)));
          expect(probe.durationSeconds, file).toBeGreaterThan(0);
        }
        const completed = await db.rows(
          `select mixed_file_key as key from audio_tracks where status = 'completed'
           union all select storage_key from voice_renditions where status = 'ready'
           union all select file_key from soundscapes where status = 'completed'`,
        );
        const stored = new Set(files);
        for (const { key } of completed) expect(stored.has(key), key).toBe(true);
        expect(files.length).toBe(completed.length);
        r.held(`${files.length} stored files, every one decodes end to end; each belongs to exactly one completed track, ready rendition or completed soundscape`);
        r.measure('stored files', files.length);
      },
    );
  }, 120_000);
});
