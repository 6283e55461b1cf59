import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SpeechGenerationError } from '@soundqueue/shared/errors';
import { parseRetryAfter } from '@soundqueue/shared/retry-after';
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

  it('reads Retry-After as delay-seconds or an HTTP-date in any of its three forms', async () => {
    const inSeconds = async (retryAfter: string) => {
      fake.script([{ kind: 'rate-limited', retryAfter }]);
      const { error } = await failure(() => provider().synthesize(request));
      expect(error, retryAfter).toMatchObject({ retryable: true, status: 429 });
      return error.retryAfterSeconds;
    };
    expect(await inSeconds('30')).toBe(30);
    expect(await inSeconds('0')).toBe(0);
    // Whole seconds: the date is rounded down to its second, so 40 s ahead is 39 or 40 s away.
    const ahead = new Date(Date.now() + 40_000);
    expect(await inSeconds(ahead.toUTCString())).toBeGreaterThanOrEqual(38); // Sun, 06 Nov 1994 08:49:37 GMT
    expect(await inSeconds(ahead.toUTCString())).toBeLessThanOrEqual(40);
    const [weekday, day, month, year, time] = ahead.toUTCString().split(/,? /) as [string, string, string, string, string];
    const longDay = { Mon: 'Monday', Tue: 'Tuesday', Wed: 'Wednesday', Thu: 'Thursday', Fri: 'Friday', Sat: 'Saturday', Sun: 'Sunday' }[weekday]!;
    const rfc850 = `${longDay}, ${day}-${month}-${year.slice(2)} ${time} GMT`; // Sunday, 06-Nov-94 08:49:37 GMT
    const asctime = `${weekday} ${month} ${String(Number(day)).padStart(2, ' ')} ${time} ${year}`; // Sun Nov  6 08:49:37 1994, in GMT
    // asctime names no zone and means GMT: read as local time (Date.parse), it was hours off on
    // any host not in UTC, so this runs in New York's time zone (Node reads TZ when it changes).
    const hostZone = process.env.TZ;
    process.env.TZ = 'America/New_York';
    try {
      for (const form of [rfc850, asctime]) {
        expect(await inSeconds(form), form).toBeGreaterThanOrEqual(38);
        expect(await inSeconds(form), form).toBeLessThanOrEqual(40);
      }
    } finally {
      if (hostZone === undefined) delete process.env.TZ;
      else process.env.TZ = hostZone;
    }
    expect(await inSeconds('Sun, 06 Nov 1994 08:49:37 GMT')).toBe(0); // past: now
  });

  it('takes a blank or unparseable Retry-After for none, not for "retry at once"', async () => {
    // Read as 0 s (Date.parse took "x 1" for 2001 and Number took " " for 0), it made the job
    // ask again within a millisecond, RATE_LIMIT_MAX_RESTARTS times over, instead of backing off.
    for (const retryAfter of [' ', 'soon', 'x 1', 'tomorrow 12', '-5', '1e3', '0x10', '1.5', '5, 5', 'Sun, 31 Feb 2099 08:49:37 GMT', 'Sun, 06 Nov 2099 08:49:37 PST']) {
      fake.script([{ kind: 'rate-limited', retryAfter }]);
      const { error } = await failure(() => provider().synthesize(request));
      expect(error, retryAfter).toMatchObject({ retryable: true, status: 429, retryAfterSeconds: undefined });
    }
    // fetch trims a header's value, so a blank one arrives empty; the parser itself also
    // takes a value that was not trimmed for none.
    for (const blank of ['', ' ', '\t', null, undefined]) expect(parseRetryAfter(blank), JSON.stringify(blank)).toBeUndefined();
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
