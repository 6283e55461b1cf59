import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { expectBookCountsMatchRows, postBook, waitForBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { fourSettingBook } from '../fixtures/books';
import { readingGeminiAnswer, startGeminiServer, type GeminiFake } from '../fakes/gemini-server';
import { startReplicateServer, type ReplicateFake } from '../fakes/replicate-server';

// The book pipeline with the real @google/genai and replicate SDKs against local servers
// that speak those APIs. The Gemini fake answers the way a model would: from the spread
// texts in the prompt.
let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let gemini: GeminiFake;
let replicate: ReplicateFake;
let failCreates = false;

beforeAll(async () => {
  gemini = await startGeminiServer({ answer: readingGeminiAnswer });
  replicate = await startReplicateServer({
    decide: (method, path) => (failCreates && method === 'POST' && path.endsWith('/predictions') ? { kind: 'prediction-failed', error: 'CUDA out of memory' } : undefined),
  });
  env = await createTestEnv({
    ANALYSIS_PROVIDER: 'gemini',
    GEMINI_API_KEY: 'g-test',
    GEMINI_BASE_URL: gemini.url,
    SOUNDSCAPE_PROVIDER: 'replicate',
    REPLICATE_API_TOKEN: 'r-test',
    REPLICATE_BASE_URL: `${replicate.url}/v1`,
    REPLICATE_POLL_INTERVAL_MS: '50',
    PROVIDER_TIMEOUT_MS: '10000',
  });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
  await gemini?.close();
  await replicate?.close();
});

const predictionsCreated = () => replicate.requests.filter((r) => r.method === 'POST' && /predictions$/.test(r.path)).length;
const analyses = () => gemini.requests.filter((r) => r.path.includes(':generateContent')).length;

describe('books through Gemini and Replicate', () => {
  it('analyses every spread, retries 429, 500 and malformed answers, and makes one soundscape per scene', async () => {
    gemini.script([{ kind: 'rate-limited', retryAfterSeconds: 1 }, 'server-error', 'not-json', 'missing-fields']);
    replicate.script(['server-error']);
    const created = await postBook(api, { title: 'Cloud Book', pages: fourSettingBook() });
    const book = await waitForBook(api, created.body.bookId);
    expect(book).toMatchObject({ success: true, status: 'ready', stats: { totalSpreads: 20, processedSpreads: 20, scenesCreated: 4, soundscapesGenerated: 4 } });
    expect(book.errors).toBeUndefined();
    // 20 analyses plus the four scripted failures, each retried once.
    expect(analyses()).toBe(24);
    // Four soundscapes; the 500 on a create is retried.
    expect(predictionsCreated()).toBe(5);
    await expectBookCountsMatchRows(env.databaseUrl, book.bookId);
    const timeline = await readJson(await api.request(`/v1/books/${book.bookId}/scenes`, { user: 'reader' }));
    expect(timeline.scenes.every((s: any) => s.soundscape.status === 'completed')).toBe(true);
    const input = replicate.requests.find((r) => r.method === 'POST' && /predictions$/.test(r.path))!.body as any;
    expect(input.input.prompt).toMatch(/Ambient soundscape/);
    expect(book.costUsd).toBeGreaterThan(0);
  });

  it('records a failed prediction on the book, stays ready, and makes it when generation runs again', async () => {
    const before = predictionsCreated();
    failCreates = true;
    const pages = fourSettingBook().slice(0, 4);
    const created = await postBook(api, { title: 'Unlucky', pages });
    const book = await waitForBook(api, created.body.bookId);
    expect(book).toMatchObject({ success: true, status: 'ready', warning: 'Some soundscapes failed to generate', stats: { scenesCreated: 1, soundscapesGenerated: 0, errorCount: 1 } });
    expect(book.errors[0]).toMatchObject({ spreadIndex: 0, pages: '1-4', errorType: 'SoundscapeGenerationError', attempt: 3 });
    expect(book.errors[0].message).toContain('CUDA out of memory');
    expect(predictionsCreated() - before).toBe(3);
    const timeline = await readJson(await api.request(`/v1/books/${book.bookId}/scenes`, { user: 'reader' }));
    expect(timeline.scenes[0].soundscape).toMatchObject({ status: 'failed', audioUrl: null });

    // Generation again: the soundscape is made this time.
    failCreates = false;
    expect((await api.request(`/v1/books/${book.bookId}/soundscapes`, { method: 'POST', user: 'reader' })).status).toBe(202);
    const again = await waitForBook(api, book.bookId);
    expect(again).toMatchObject({ success: true, status: 'ready', stats: { soundscapesGenerated: 1 } });
    expect(again.errors).toBeUndefined();
    await expectBookCountsMatchRows(env.databaseUrl, book.bookId);
  });

  it('records the cost of answers that were paid for but could not be used', async () => {
    // Gemini's prose (its tokens are billed) and a prediction that succeeded with a file that
    // is not audio (its run time is billed): both were once recorded as costing nothing.
    gemini.script(['not-json']);
    replicate.script(['garbage']);
    const created = await postBook(api, { title: 'Paid Anyway', pages: ['The forest at dawn, birds singing.', 'Mist among the trees.'] });
    const book = await waitForBook(api, created.body.bookId);
    expect(book).toMatchObject({ success: true, status: 'ready', stats: { soundscapesGenerated: 1 } });
    const calls = await queryRows<{ kind: string; outcome: string; units: number; cost: number }>(
      env.databaseUrl,
      `select kind, outcome, units::float as units, cost_usd::float as cost from provider_calls where book_id = $1 order by kind, outcome`,
      [book.bookId],
    );
    expect(calls.map((c) => `${c.kind} ${c.outcome}`)).toEqual(['analysis error', 'analysis ok', 'soundscape error', 'soundscape ok']);
    for (const call of calls) {
      expect(call.units).toBeGreaterThan(0);
      expect(call.cost).toBeGreaterThan(0);
    }
  });

  it('fails a spread at once on a 400 from Gemini and records it', async () => {
    gemini.script([{ kind: 'bad-request', message: 'Request contains an invalid argument.' }]);
    const created = await postBook(api, { title: 'One Bad', pages: ['The forest at dawn, birds singing.', 'Mist among the trees.'] });
    const book = await waitForBook(api, created.body.bookId);
    expect(book).toMatchObject({ success: false, status: 'failed', error: 'All spreads failed to process' });
    expect(book.errors[0]).toMatchObject({ errorType: 'ContentAnalysisError', attempt: 1 });
    expect(book.errors[0].message).toContain('invalid argument');
  });
});
