import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SpeechGenerationError } from '@soundqueue/shared/errors';
import { loadConfig } from '@soundqueue/shared/config';
import { createProviders } from '../../apps/worker/src/providers';
import { createOpenAiSpeechProvider } from '../../apps/worker/src/speech/openai';
import { probeAudio } from '../fakes/http-server';
import { startOpenAiSpeechServer, type OpenAiSpeechFake } from '../fakes/openai-speech-server';

// The real `openai` SDK against a server that speaks OpenAI's wire format.

// Not the default price (0.012), so a cost at the default would show the option was ignored.
const PRICE_PER_1K_CHARS = 0.02;

const request = { text: 'The sea was calm that morning.', voice: 'coral', model: 'gpt-4o-mini-tts', instructions: 'Speak softly.' };

let fake: OpenAiSpeechFake;
beforeAll(async () => {
  fake = await startOpenAiSpeechServer();
});
afterAll(() => fake.close());

function provider(timeoutMs = 5000, maxAudioBytes = 256 * 1024 * 1024) {
  return createOpenAiSpeechProvider({ apiKey: 'sk-test', baseURL: `${fake.url}/v1`, timeoutMs, maxAudioBytes, pricePer1kChars: PRICE_PER_1K_CHARS });
}

/** Runs one synthesis that must fail and returns its error and the requests it made. */
async function failure(run: () => Promise<unknown>): Promise<{ error: SpeechGenerationError; requests: number }> {
  const before = fake.requests.length;
  const error = await run().then(
    () => expect.fail('synthesize should have failed'),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SpeechGenerationError);
  return { error: error as SpeechGenerationError, requests: fake.requests.length - before };
}

describe('OpenAI speech provider', () => {
  it('returns decodable MP3 audio, usage and cost, sending the SDK request OpenAI expects', async () => {
    const before = fake.requests.length;
    const result = await provider().synthesize(request);

    const probe = await probeAudio(result.audio);
    expect(probe.formatName).toBe('mp3');
    expect(probe.durationSeconds).toBeGreaterThan(0.3);
    expect(result.format).toBe('mp3');
    expect(result.usage.characters).toBe(request.text.length);
    expect(result.costUsd).toBeCloseTo((PRICE_PER_1K_CHARS * request.text.length) / 1000, 10);

    const sent = fake.requests[before]!;
    expect(sent.method).toBe('POST');
    expect(sent.path).toBe('/v1/audio/speech');
    expect(sent.headers.authorization).toBe('Bearer sk-test');
    expect(sent.body).toEqual({
      model: 'gpt-4o-mini-tts', voice: 'coral', input: request.text, instructions: 'Speak softly.', response_format: 'mp3',
    });
  });

  it('prices the call at PRICE_OPENAI_TTS_PER_1K_CHARS from config', async () => {
    const config = loadConfig({ OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: `${fake.url}/v1`, PRICE_OPENAI_TTS_PER_1K_CHARS: '0.05' });
    const result = await createProviders(config).speech.synthesize(request);
    expect(result.costUsd).toBeCloseTo((0.05 * request.text.length) / 1000, 10);
  });

  it('turns a 429 into a retryable error with Retry-After, after exactly one request', async () => {
    fake.script([{ kind: 'rate-limited', retryAfterSeconds: 7 }]);
    const { error, requests } = await failure(() => provider().synthesize(request));
    expect(requests).toBe(1);
    expect(error).toMatchObject({ retryable: true, status: 429, retryAfterSeconds: 7 });
    expect(error.message).toMatch(/^OpenAI speech API answered 429: Rate limit reached/);
  });

  it('turns a 500 into a retryable error, after exactly one request', async () => {
    fake.script(['server-error']);
    const { error, requests } = await failure(() => provider().synthesize(request));
    expect(requests).toBe(1);
    expect(error).toMatchObject({ retryable: true, status: 500 });
  });

  it('turns a 400 into a non-retryable error carrying OpenAI\'s message', async () => {
    fake.script([{ kind: 'bad-request', message: "Invalid value: 'nobody'. Supported values are: 'alloy', 'coral'.", param: 'voice' }]);
    const { error, requests } = await failure(() => provider().synthesize({ ...request, voice: 'nobody' }));
    expect(requests).toBe(1);
    expect(error).toMatchObject({ retryable: false, status: 400 });
    expect(error.message).toBe("OpenAI speech API answered 400: Invalid value: 'nobody'. Supported values are: 'alloy', 'coral'.");
  });

  it('times out a call that gets no answer, as a retryable error', async () => {
    fake.script(['hang']);
    const started = Date.now();
    const { error, requests } = await failure(() => provider(300).synthesize(request));
    expect(Date.now() - started).toBeLessThan(3000);
    expect(requests).toBe(1);
    expect(error.retryable).toBe(true);
    expect(error.message).toBe('OpenAI speech API did not answer within 300 ms');
  });

  it('treats a download cut off mid-body as a retryable error', async () => {
    fake.script(['truncated']);
    const { error } = await failure(() => provider().synthesize(request));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/transfer broke off/);
  });

  it('detects bytes that are not audio despite an audio content-type (before ffprobe)', async () => {
    fake.script(['garbage']);
    const { error } = await failure(() => provider().synthesize(request));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/answered 200 \(audio\/mpeg\) but the \d+ bytes are not MP3/);
  });

  it('rejects a 200 HTML page as not audio', async () => {
    fake.script(['html']);
    const { error } = await failure(() => provider().synthesize(request));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/answered 200 with text\/html instead of audio: <html>/);
  });

  it('reports a cancelled call as cancelled', async () => {
    fake.script(['hang']);
    const controller = new AbortController();
    const before = fake.requests.length;
    const pending = failure(() => provider().synthesize(request, controller.signal));
    await expect.poll(() => fake.requests.length).toBe(before + 1); // the request is in flight
    controller.abort();
    const { error } = await pending;
    expect(error.message).toBe('OpenAI speech request was cancelled');
  });
});

describe('OpenAI speech, an answer larger than PROVIDER_MAX_AUDIO_BYTES', () => {
  it('stops reading an endless one at the limit, and says so', async () => {
    // Read whole, it would take the worker's memory; the deadline is far off.
    fake.script(['endless']);
    const { error, requests } = await failure(() => provider(60_000, 256 * 1024).synthesize(request));
    expect(requests).toBe(1);
    expect(error.message).toBe('OpenAI speech API answered 200, but the answer has over 262144 bytes, more than the 262144 an audio answer may have');
    expect(error.retryable).toBe(true);
  });

  it('refuses one whose Content-Length is over the limit before reading it', async () => {
    const { error } = await failure(() => provider(5000, 100).synthesize(request));
    expect(error.message).toMatch(/^OpenAI speech API answered 200, but the answer has \d+ bytes, more than the 100 an audio answer may have$/);
  });

  it('takes one of exactly the limit', async () => {
    const size = (await provider().synthesize(request)).audio.length;
    expect((await provider(5000, size).synthesize(request)).audio.length).toBe(size);
  });
});

describe('OpenAI speech fake', () => {
  it('queues requests beyond maxConcurrent, each taking delayMs', async () => {
    const slow = await startOpenAiSpeechServer({ delayMs: 150, maxConcurrent: 1 });
    try {
      const speech = createOpenAiSpeechProvider({ apiKey: 'sk-test', baseURL: `${slow.url}/v1`, timeoutMs: 5000, maxAudioBytes: 1024 * 1024, pricePer1kChars: PRICE_PER_1K_CHARS });
      const started = Date.now();
      const finished: number[] = [];
      await Promise.all([1, 2, 3].map(() => speech.synthesize(request).then(() => finished.push(Date.now() - started))));
      finished.sort((a, b) => a - b);
      // One at a time: the n-th answer cannot come before n × delayMs.
      expect(finished[0]).toBeGreaterThanOrEqual(145);
      expect(finished[1]).toBeGreaterThanOrEqual(295);
      expect(finished[2]).toBeGreaterThanOrEqual(445);
    } finally {
      await slow.close();
    }
  });
});
