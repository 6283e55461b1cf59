import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SoundscapeGenerationError } from '@soundqueue/shared/errors';
import { createReplicateSoundscapeProvider } from '../../apps/worker/src/soundscape/replicate';
import { probeAudio } from '../fakes/http-server';
import { startReplicateServer, type ReplicateFake } from '../fakes/replicate-server';

// The real `replicate` SDK against a server that speaks Replicate's prediction API.

// Not the default price (0.0014), so a cost at the default would show the option was ignored.
const PRICE_PER_SECOND = 0.003;

const request = { prompt: 'Steady rain on a tin roof, distant thunder', ambience: ['rain', 'thunder'], mood: 'calm', durationSeconds: 2 };

let fake: ReplicateFake;
beforeAll(async () => {
  fake = await startReplicateServer();
});
afterAll(() => fake.close());

function provider(options: { model?: string; timeoutMs?: number; maxAudioBytes?: number } = {}) {
  return createReplicateSoundscapeProvider({
    apiToken: 'r8_test',
    baseUrl: `${fake.url}/v1`,
    model: options.model ?? 'meta/musicgen',
    pollIntervalMs: 10,
    timeoutMs: options.timeoutMs ?? 5000,
    maxAudioBytes: options.maxAudioBytes ?? 256 * 1024 * 1024,
    pricePerSecond: PRICE_PER_SECOND,
  });
}

async function failure(run: () => Promise<unknown>): Promise<{ error: SoundscapeGenerationError; paths: string[] }> {
  const before = fake.requests.length;
  const error = await run().then(
    () => expect.fail('generate should have failed'),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SoundscapeGenerationError);
  return { error: error as SoundscapeGenerationError, paths: fake.requests.slice(before).map((r) => `${r.method} ${r.path}`) };
}

describe('Replicate soundscape provider', () => {
  it('creates a prediction for "owner/name", polls it to success and downloads decodable audio', async () => {
    const before = fake.requests.length;
    const result = await provider().generate(request);

    const probe = await probeAudio(result.audio);
    expect(probe.formatName).toBe('mp3');
    expect(probe.durationSeconds).toBeGreaterThan(1.5);
    expect(result.format).toBe('mp3');
    expect(result.usage.seconds).toBeGreaterThan(0);
    expect(result.costUsd).toBeCloseTo(result.usage.seconds * PRICE_PER_SECOND, 12);

    const sent = fake.requests.slice(before);
    expect(sent[0]).toMatchObject({
      method: 'POST',
      path: '/v1/models/meta/musicgen/predictions',
      body: { input: { prompt: request.prompt, duration: 2, output_format: 'mp3' } },
    });
    expect(sent[0]!.headers.authorization).toBe('Bearer r8_test');
    const polls = sent.filter((r) => r.method === 'GET' && r.path.startsWith('/v1/predictions/'));
    expect(polls.length).toBeGreaterThanOrEqual(2); // starting → processing → succeeded
    expect(sent.at(-1)!.path).toMatch(/^\/files\/\w+\.mp3$/);
  });

  it('creates a prediction for "owner/name:version" by version, as the SDK does', async () => {
    const before = fake.requests.length;
    await provider({ model: 'meta/musicgen:671ac645ce5e' }).generate(request);
    expect(fake.requests[before]).toMatchObject({ method: 'POST', path: '/v1/predictions', body: { version: '671ac645ce5e' } });
  });

  it('turns a 429 into a retryable error with Retry-After, after exactly one request', async () => {
    fake.script([{ kind: 'rate-limited', retryAfterSeconds: 9 }]);
    const { error, paths } = await failure(() => provider().generate(request));
    expect(paths).toEqual(['POST /v1/models/meta/musicgen/predictions']);
    expect(error).toMatchObject({ retryable: true, status: 429, retryAfterSeconds: 9 });
    expect(error.message).toBe('Replicate API answered 429: Request was throttled. Expected available in 9 seconds.');
  });

  it('reads an HTTP-date Retry-After as the seconds until then, the pause its queue takes', async () => {
    fake.script([{ kind: 'rate-limited', retryAfter: new Date(Date.now() + 40_000).toUTCString() }]);
    const { error, paths } = await failure(() => provider().generate(request));
    expect(paths).toEqual(['POST /v1/models/meta/musicgen/predictions']);
    expect(error).toMatchObject({ retryable: true, status: 429 });
    // Whole seconds: the date is rounded down to its second, so 40 s ahead is 39 or 40 s away.
    expect(error.retryAfterSeconds).toBeGreaterThanOrEqual(38);
    expect(error.retryAfterSeconds).toBeLessThanOrEqual(40);
  });

  it('takes a blank or unparseable Retry-After for none, not for "retry at once"', async () => {
    for (const retryAfter of [' ', 'soon', 'x 1', '-5', '1.5', '0x10', 'Sun, 31 Feb 2099 08:49:37 GMT']) {
      fake.script([{ kind: 'rate-limited', retryAfter }]);
      const { error, paths } = await failure(() => provider().generate(request));
      expect(paths, retryAfter).toHaveLength(1);
      expect(error, retryAfter).toMatchObject({ retryable: true, status: 429, retryAfterSeconds: undefined });
    }
  });

  it('turns a 500 while polling into a retryable error, after exactly one poll (no SDK retry)', async () => {
    fake.script(['ok', 'server-error']);
    const { error, paths } = await failure(() => provider().generate(request));
    expect(paths).toHaveLength(2);
    expect(paths[1]).toMatch(/^GET \/v1\/predictions\/\w+$/);
    expect(error).toMatchObject({ retryable: true, status: 500 });
  });

  it('turns a 422 into a non-retryable error carrying Replicate\'s detail', async () => {
    fake.script([{ kind: 'bad-request', detail: '- input.duration: Must be less than or equal to 30' }]);
    const { error, paths } = await failure(() => provider().generate({ ...request, durationSeconds: 90 }));
    expect(paths).toHaveLength(1);
    expect(error).toMatchObject({ retryable: false, status: 422 });
    expect(error.message).toBe('Replicate API answered 422: Input validation failed: - input.duration: Must be less than or equal to 30');
  });

  it('times out, cancelling the prediction, when polls get no answer', async () => {
    fake.script(['ok', 'hang']);
    const { error, paths } = await failure(() => provider({ timeoutMs: 300 }).generate(request));
    expect(error.retryable).toBe(true);
    expect(error.message).toBe('Replicate did not answer within 300 ms');
    expect(paths.at(-1)).toMatch(/^POST \/v1\/predictions\/\w+\/cancel$/);
    // Replicate bills a cancelled prediction's run time, which its answer to the cancel reports.
    const cancelled = fake.predictions.at(-1);
    expect(error.billed).toEqual({ units: cancelled!.predictTime, costUsd: cancelled!.predictTime! * PRICE_PER_SECOND });
    expect(error.billed!.units).toBeGreaterThan(0);
  });

  it('turns a failed prediction into an error with the prediction\'s error text (retryable)', async () => {
    fake.script(['prediction-failed']);
    const { error } = await failure(() => provider().generate(request));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/^Replicate prediction \w+ failed: CUDA out of memory/);
    // A failed prediction's run time is billed too.
    const failed = fake.predictions.at(-1);
    expect(error.billed).toEqual({ units: failed!.predictTime, costUsd: failed!.predictTime! * PRICE_PER_SECOND });
  });

  it('does not retry a prediction that failed on its input', async () => {
    fake.script([{ kind: 'prediction-failed', error: 'ValueError: duration must be a positive number' }]);
    const { error } = await failure(() => provider().generate(request));
    expect(error.retryable).toBe(false);
    expect(error.message).toMatch(/failed: ValueError: duration must be a positive number$/);
  });

  it('detects an output file whose bytes are not audio', async () => {
    fake.script(['garbage']);
    const { error } = await failure(() => provider().generate(request));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/output \(\d+ bytes from .*\) is not MP3 or WAV audio/);
  });

  it('treats a download cut off mid-body as a retryable error', async () => {
    fake.script(['truncated']);
    const { error } = await failure(() => provider().generate(request));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/^Replicate request failed while downloading its output: /);
  });

  it('refuses an output file larger than PROVIDER_MAX_AUDIO_BYTES, with what the prediction was billed', async () => {
    const { error } = await failure(() => provider({ maxAudioBytes: 100 }).generate(request));
    expect(error.retryable).toBe(true);
    expect(error.message).toMatch(/^Replicate prediction \S+ output: the answer has \d+ bytes, more than the 100 an audio answer may have$/);
    expect(error.billed).toBeDefined();
  });
});

describe('Replicate fake', () => {
  it('runs at most maxConcurrent predictions, each for delayMs; the rest stay "starting"', async () => {
    const slow = await startReplicateServer({ delayMs: 150, maxConcurrent: 1 });
    try {
      const soundscapes = createReplicateSoundscapeProvider({
        apiToken: 'r8_test', baseUrl: `${slow.url}/v1`, model: 'meta/musicgen', pollIntervalMs: 20, timeoutMs: 5000, maxAudioBytes: 256 * 1024 * 1024, pricePerSecond: PRICE_PER_SECOND,
      });
      const started = Date.now();
      const finished: number[] = [];
      await Promise.all([1, 2].map(() => soundscapes.generate(request).then(() => finished.push(Date.now() - started))));
      finished.sort((a, b) => a - b);
      expect(finished[0]).toBeGreaterThanOrEqual(145);
      expect(finished[1]).toBeGreaterThanOrEqual(295);
    } finally {
      await slow.close();
    }
  });
});
