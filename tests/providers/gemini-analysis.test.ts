import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ContentAnalysisError } from '@soundqueue/shared/errors';
import { createGeminiAnalysisProvider } from '../../apps/worker/src/analysis/gemini';
import { defaultGeminiAnswer, startGeminiServer, type GeminiFake } from '../fakes/gemini-server';

// The real @google/genai SDK against a server that speaks the Gemini API's wire format.

// Not the default price (0.0004), so a cost at the default would show the option was ignored.
const PRICE_PER_1K_TOKENS = 0.001;

const request = {
  spreadIndex: 3,
  previousText: 'They rowed across the harbour as the sun went down.',
  text: 'Rain hammered the roof of the old inn. Inside, a fire crackled.',
};

let fake: GeminiFake;
beforeAll(async () => {
  fake = await startGeminiServer();
});
beforeEach(() => {
  fake.answer = defaultGeminiAnswer;
});
afterAll(() => fake.close());

function provider(timeoutMs = 5000) {
  return createGeminiAnalysisProvider({ apiKey: 'gm-test', baseUrl: fake.url, model: 'gemini-2.5-flash', timeoutMs, pricePer1kTokens: PRICE_PER_1K_TOKENS });
}

async function failure(run: () => Promise<unknown>): Promise<{ error: ContentAnalysisError; requests: number }> {
  const before = fake.requests.length;
  const error = await run().then(
    () => expect.fail('analyze should have failed'),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ContentAnalysisError);
  return { error: error as ContentAnalysisError, requests: fake.requests.length - before };
}

describe('Gemini analysis provider', () => {
  it('parses the JSON analysis, prices its tokens and sends both spreads with a response schema', async () => {
    fake.answer = (prompt) => ({
      sceneChanged: prompt.includes('old inn'),
      setting: 'an old inn',
      timeOfDay: 'night',
      mood: 'cosy',
      ambience: ['rain on a roof', 'crackling fire'],
      confidence: 0.9,
    });
    const before = fake.requests.length;
    const result = await provider().analyze(request);

    expect(result.analysis).toEqual({
      sceneChanged: true, setting: 'an old inn', timeOfDay: 'night', mood: 'cosy', ambience: ['rain on a roof', 'crackling fire'], confidence: 0.9,
    });
    expect(result.usage.tokens).toBeGreaterThan(0);
    expect(result.costUsd).toBeCloseTo((result.usage.tokens * PRICE_PER_1K_TOKENS) / 1000, 12);

    const sent = fake.requests[before]!;
    expect(sent.path).toBe('/v1beta/models/gemini-2.5-flash:generateContent');
    expect(sent.headers['x-goog-api-key']).toBe('gm-test');
    const body = sent.body as { contents: Array<{ parts: Array<{ text: string }> }>; generationConfig: Record<string, unknown> };
    const prompt = body.contents[0]!.parts[0]!.text;
    expect(prompt).toContain(request.previousText);
    expect(prompt).toContain(request.text);
    expect(body.generationConfig.responseMimeType).toBe('application/json');
    expect(body.generationConfig.responseSchema).toMatchObject({ type: 'OBJECT', required: expect.arrayContaining(['sceneChanged', 'ambience']) });
  });

  it('says there is no previous spread for spread 0, and marks it a new scene', async () => {
    fake.answer = () => ({ sceneChanged: false, setting: 'a beach', timeOfDay: 'noon', mood: 'bright', ambience: ['waves'], confidence: 0.7 });
    const before = fake.requests.length;
    const result = await provider().analyze({ spreadIndex: 0, previousText: null, text: 'The beach was empty.' });
    expect(result.analysis.sceneChanged).toBe(true);
    expect(JSON.stringify(fake.requests[before]!.body)).toContain('There is no previous spread');
  });

  it('turns a 429 into a retryable error with Retry-After, after exactly one request', async () => {
    fake.script([{ kind: 'rate-limited', retryAfterSeconds: 13 }]);
    const { error, requests } = await failure(() => provider().analyze(request));
    expect(requests).toBe(1);
    expect(error).toMatchObject({ retryable: true, status: 429, retryAfterSeconds: 13 });
    expect(error.message).toBe('Gemini API answered 429: RESOURCE_EXHAUSTED: Resource has been exhausted (e.g. check quota).');
  });

  it('falls back to the RetryInfo delay in the body when there is no Retry-After header', async () => {
    fake.script([{ kind: 'rate-limited', retryAfterSeconds: 21, header: false }]);
    const { error } = await failure(() => provider().analyze(request));
    expect(error.retryAfterSeconds).toBe(21);
  });

  it('reads an HTTP-date Retry-After as the seconds until then, the pause its queue takes, before the RetryInfo delay', async () => {
    fake.script([{ kind: 'rate-limited', retryAfter: new Date(Date.now() + 40_000).toUTCString(), retryInfoSeconds: 5 }]);
    const { error, requests } = await failure(() => provider().analyze(request));
    expect(requests).toBe(1);
    expect(error).toMatchObject({ retryable: true, status: 429 });
    // Whole seconds: the date is rounded down to its second, so 40 s ahead is 39 or 40 s away.
    expect(error.retryAfterSeconds).toBeGreaterThanOrEqual(38);
    expect(error.retryAfterSeconds).toBeLessThanOrEqual(40);
  });

  it('takes a blank or unparseable Retry-After for none: the RetryInfo delay when the body has one, else no delay', async () => {
    for (const retryAfter of [' ', 'soon', 'x 1', '-5', '1.5', '0x10', 'Sun, 31 Feb 2099 08:49:37 GMT']) {
      fake.script([{ kind: 'rate-limited', retryAfter, retryInfoSeconds: 21 }, { kind: 'rate-limited', retryAfter }]);
      expect((await failure(() => provider().analyze(request))).error.retryAfterSeconds, retryAfter).toBe(21);
      const { error } = await failure(() => provider().analyze(request));
      expect(error, retryAfter).toMatchObject({ retryable: true, status: 429, retryAfterSeconds: undefined });
    }
  });

  it('turns a 500 into a retryable error, after exactly one request', async () => {
    fake.script(['server-error']);
    const { error, requests } = await failure(() => provider().analyze(request));
    expect(requests).toBe(1);
    expect(error).toMatchObject({ retryable: true, status: 500 });
  });

  it('turns a 400 into a non-retryable error carrying Gemini\'s message', async () => {
    fake.script([{ kind: 'bad-request', message: 'API key not valid. Please pass a valid API key.' }]);
    const { error, requests } = await failure(() => provider().analyze(request));
    expect(requests).toBe(1);
    expect(error).toMatchObject({ retryable: false, status: 400 });
    expect(error.message).toBe('Gemini API answered 400: INVALID_ARGUMENT: API key not valid. Please pass a valid API key.');
  });

  it('times out a call that gets no answer, as a retryable error', async () => {
    fake.script(['hang']);
    const { error, requests } = await failure(() => provider(300).analyze(request));
    expect(requests).toBe(1);
    expect(error.retryable).toBe(true);
    expect(error.message).toBe('Gemini API did not answer within 300 ms');
  });

  it('rejects model text that is not JSON as a retryable error', async () => {
    fake.script(['not-json']);
    const { error } = await failure(() => provider().analyze(request));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/^Gemini answered text that is not JSON \(finishReason STOP\): Sure!/);
  });

  it('rejects JSON that misses fields as a retryable error naming them', async () => {
    fake.script(['missing-fields']);
    const { error } = await failure(() => provider().analyze(request));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/^Gemini's analysis does not match the schema: sceneChanged: .*timeOfDay/);
  });

  it('rejects out-of-range values as a retryable error', async () => {
    fake.answer = () => ({ sceneChanged: true, setting: 'x', timeOfDay: 'night', mood: 'dark', ambience: [], confidence: 7 });
    const { error } = await failure(() => provider().analyze(request));
    expect(error.message).toMatch(/confidence/);
  });
});
