import { setTimeout as sleep } from 'node:timers/promises';
import Replicate, { type Prediction } from 'replicate';
import { SoundscapeGenerationError, isRetryableStatus, type Billed } from '@soundqueue/shared/errors';
import { parseRetryAfter } from '@soundqueue/shared/retry-after';
import { sniffAudioFormat } from '../speech/openai';
import type { SoundscapeProvider, SoundscapeRequest, SoundscapeResult } from './types';
import { readAudioBody } from '../provider-body';

// Soundscapes from a Replicate model (meta/musicgen style input) through the `replicate` SDK:
// create a prediction, poll it with replicate.wait, download the output file.

export interface ReplicateSoundscapeOptions {
  apiToken: string;
  /** e.g. "https://api.replicate.com/v1" (the SDK's default) or a test server's ".../v1". */
  baseUrl?: string;
  /** "owner/name" (the model's latest version) or "owner/name:version". */
  model: string;
  pollIntervalMs: number;
  /** Deadline for the whole generation: create, polls and download. */
  timeoutMs: number;
  /** The most bytes the output file may have (PROVIDER_MAX_AUDIO_BYTES). */
  maxAudioBytes: number;
  /** USD per second of generation (PRICE_REPLICATE_PER_SECOND). */
  pricePerSecond: number;
}

export function createReplicateSoundscapeProvider(options: ReplicateSoundscapeOptions): SoundscapeProvider {
  const target = parseModel(options.model);

  return {
    name: 'replicate',
    async generate(request: SoundscapeRequest, signal?: AbortSignal): Promise<SoundscapeResult> {
      const deadline = AbortSignal.timeout(options.timeoutMs);
      const combined = signal ? AbortSignal.any([signal, deadline]) : deadline;
      const fetchOnce = singleShotFetch(combined);
      // A client per call, so that its fetch carries this call's deadline: replicate.wait
      // polls without any signal of its own.
      const replicate = new Replicate({ auth: options.apiToken, baseUrl: options.baseUrl, fetch: fetchOnce, useFileOutput: false });
      const context = { signal, timeoutMs: options.timeoutMs, maxAudioBytes: options.maxAudioBytes };

      const billedFor = (p: Prediction | undefined) => runTimeBilled(p, options.pricePerSecond);
      let prediction: Prediction | undefined;
      try {
        prediction = await replicate.predictions.create({
          ...target,
          input: { prompt: request.prompt, duration: request.durationSeconds, output_format: 'mp3' },
          signal: combined,
        });
        prediction = await settle(replicate, prediction, options.pollIntervalMs, combined);
      } catch (error) {
        // Abandoned (deadline or caller) while it ran: stopped, and billed for as long as it ran.
        const cancelled = combined.aborted && prediction ? await cancelQuietly(options, prediction.id) : undefined;
        throw toSoundscapeError(error, { ...context, predictionId: prediction?.id, aborted: combined.aborted, billed: billedFor(cancelled) });
      }
      if (prediction.status !== 'succeeded') {
        // Abandoned (deadline or caller): stop it so it does not run and bill on.
        const ended = combined.aborted ? ((await cancelQuietly(options, prediction.id)) ?? prediction) : prediction;
        throw outcomeError(ended, { ...context, aborted: combined.aborted, billed: billedFor(ended) });
      }

      // A prediction that succeeded is paid for, even if its file turns out unusable below.
      const seconds = prediction.metrics?.predict_time ?? request.durationSeconds;
      const billed = { units: seconds, costUsd: seconds * options.pricePerSecond };
      const url = outputUrl(prediction.output);
      if (!url) {
        throw new SoundscapeGenerationError(`Replicate prediction ${prediction.id} succeeded without an output file: ${JSON.stringify(prediction.output)?.slice(0, 200)}`, { billed });
      }
      const audio = await download(url, fetchOnce, { ...context, predictionId: prediction.id, combined, billed });
      const format = sniffAudioFormat(audio);
      if (!format) {
        throw new SoundscapeGenerationError(
          `Replicate prediction ${prediction.id} output (${audio.length} bytes from ${url}) is not MP3 or WAV audio`,
          { billed },
        );
      }
      return { audio, format, usage: { seconds }, costUsd: billed.costUsd };
    },
  };
}

const ENDED = ['succeeded', 'failed', 'canceled'];

/**
 * Polls a prediction until it has ended, or until `signal` aborts (then it is returned as
 * last seen). Not the SDK's replicate.wait: that throws a bare Error for a failed prediction,
 * without the prediction and so without the run time Replicate billed for it.
 */
async function settle(replicate: Replicate, prediction: Prediction, intervalMs: number, signal: AbortSignal): Promise<Prediction> {
  let current = prediction;
  for (let first = true; !ENDED.includes(current.status) && !signal.aborted; first = false) {
    if (!first) await sleep(intervalMs, undefined, { signal }).catch(() => undefined);
    if (signal.aborted) break;
    current = await replicate.predictions.get(current.id);
  }
  return current;
}

/** The SDK's own split (ModelVersionIdentifier): a version posts to /predictions, a bare model to /models/…/predictions. */
function parseModel(ref: string): { version: string } | { model: string } {
  const match = /^(?<owner>[^/]+)\/(?<name>[^/:]+)(:(?<version>.+))?$/.exec(ref);
  if (!match?.groups) throw new Error(`Replicate model must be "owner/name" or "owner/name:version", not "${ref}"`);
  const { owner, name, version } = match.groups;
  return version ? { version } : { model: `${owner}/${name}` };
}

/**
 * A fetch that lets each SDK request reach the network once. replicate's `request()` wraps
 * every call in withAutomaticRetries (429 on any method, 5xx on GETs, and any thrown network
 * error, up to six sends) and offers no option to turn it off. Its retries re-send the same
 * `init` object, so a second call with an `init` already seen replays the first outcome
 * (status, headers, body, or the same rejection) instead of sending again. It also puts
 * this call's deadline on every request, polls included.
 */
function singleShotFetch(signal: AbortSignal): (input: Request | string, init?: RequestInit) => Promise<Response> {
  type Outcome = { status: number; statusText: string; headers: Headers; body: ArrayBuffer };
  const seen = new WeakMap<object, Promise<Outcome>>();
  return async (input, init) => {
    const withDeadline = { ...init, signal: init?.signal ? AbortSignal.any([init.signal, signal]) : signal };
    if (!init) return fetch(input, withDeadline); // not from request(): nothing retries it
    let outcome = seen.get(init);
    if (!outcome) {
      outcome = fetch(input, withDeadline).then(async (r) => ({
        status: r.status, statusText: r.statusText, headers: r.headers, body: await r.arrayBuffer(),
      }));
      seen.set(init, outcome);
    }
    const { status, statusText, headers, body } = await outcome;
    return new Response([101, 204, 205, 304].includes(status) ? null : body.slice(0), { status, statusText, headers });
  };
}

/** The output's file URL: a string, the first of an array, or a FileOutput's url(). */
function outputUrl(output: unknown): string | undefined {
  if (typeof output === 'string') return output;
  if (Array.isArray(output)) return outputUrl(output[0]);
  if (output && typeof (output as { url?: unknown }).url === 'function') return String((output as { url(): URL }).url());
  return undefined;
}

async function download(
  url: string,
  fetchOnce: (input: string) => Promise<Response>,
  context: { signal: AbortSignal | undefined; timeoutMs: number; maxAudioBytes: number; predictionId: string; combined: AbortSignal; billed: Billed },
): Promise<Buffer> {
  let audio: Buffer;
  try {
    const response = await fetchOnce(url);
    if (!response.ok) {
      const detail = (await response.text()).slice(0, 200);
      throw new SoundscapeGenerationError(`Downloading Replicate prediction ${context.predictionId} output answered ${response.status}: ${detail}`, {
        status: response.status,
        retryable: isRetryableStatus(response.status),
        retryAfterSeconds: parseRetryAfter(response.headers.get('retry-after')),
        billed: context.billed,
      });
    }
    audio = await readAudioBody(response, context.maxAudioBytes, (message) => new SoundscapeGenerationError(`Replicate prediction ${context.predictionId} output: ${message}`, { billed: context.billed }));
  } catch (error) {
    throw toSoundscapeError(error, { ...context, aborted: context.combined.aborted, during: 'downloading its output' });
  }
  if (audio.length === 0) throw new SoundscapeGenerationError(`Replicate prediction ${context.predictionId} output file is empty`, { billed: context.billed });
  return audio;
}

/**
 * What a prediction that did not succeed was billed: Replicate bills the compute time a
 * prediction ran, failed or cancelled ones too, and reports it as `metrics.predict_time`
 * once the prediction has ended. Nothing when it reports none (it never started, or the
 * cancel's answer did not say).
 */
function runTimeBilled(prediction: Prediction | undefined, pricePerSecond: number): Billed | undefined {
  const seconds = prediction?.metrics?.predict_time;
  if (typeof seconds !== 'number' || !(seconds > 0)) return undefined;
  return { units: seconds, costUsd: seconds * pricePerSecond };
}

/** A failed prediction is retryable unless its error reads as bad input (which won't change). */
function outcomeError(
  prediction: Prediction,
  context: { signal: AbortSignal | undefined; timeoutMs: number; aborted: boolean; billed: Billed | undefined },
): SoundscapeGenerationError {
  const { billed } = context;
  if (context.signal?.aborted) return new SoundscapeGenerationError(`Replicate prediction ${prediction.id} was cancelled by us`, { billed });
  if (context.aborted) {
    return new SoundscapeGenerationError(`Replicate prediction ${prediction.id} did not finish within ${context.timeoutMs} ms (last status ${prediction.status}); cancelled it`, { billed });
  }
  if (prediction.status === 'failed') return failedPrediction(prediction.id, String(prediction.error ?? 'no error text'), billed);
  return new SoundscapeGenerationError(`Replicate prediction ${prediction.id} ended ${prediction.status}`, { billed });
}

const INVALID_INPUT = /\b(invalid|validation|must be|not supported|unsupported)\b/i;

function failedPrediction(id: string | undefined, text: string, billed?: Billed): SoundscapeGenerationError {
  return new SoundscapeGenerationError(`Replicate prediction ${id ?? '(unknown)'} failed: ${text}`, { retryable: !INVALID_INPUT.test(text), billed });
}

function toSoundscapeError(
  error: unknown,
  context: { signal: AbortSignal | undefined; timeoutMs: number; predictionId?: string; aborted: boolean; during?: string; billed?: Billed },
): SoundscapeGenerationError {
  if (error instanceof SoundscapeGenerationError) return error;
  const where = context.during ? ` while ${context.during}` : '';
  const { billed } = context;
  if (context.signal?.aborted) return new SoundscapeGenerationError(`Replicate soundscape request was cancelled${where}`, { cause: error, billed });
  if (context.aborted) return new SoundscapeGenerationError(`Replicate did not answer within ${context.timeoutMs} ms${where}`, { cause: error, billed });
  const message = error instanceof Error ? error.message : String(error);
  const response = (error as { response?: unknown }).response;
  if (error instanceof Error && error.name === 'ApiError' && response instanceof Response) {
    return new SoundscapeGenerationError(`Replicate API answered ${response.status}: ${apiErrorDetail(message)}`, {
      status: response.status,
      retryable: isRetryableStatus(response.status),
      retryAfterSeconds: parseRetryAfter(response.headers.get('retry-after')),
      cause: error,
    });
  }
  const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : '';
  // Connection refused or reset, DNS, a transfer cut off: worth another attempt.
  return new SoundscapeGenerationError(`Replicate request failed${where}: ${message}${cause}`, { cause: error, billed });
}

/** ApiError's message ends with the response body ({"detail","status"}); its detail is what a person reads. */
function apiErrorDetail(message: string): string {
  const json = message.slice(message.indexOf('{'), message.lastIndexOf('}') + 1);
  try {
    const body = JSON.parse(json) as { detail?: unknown; title?: unknown };
    if (typeof body.detail === 'string') return typeof body.title === 'string' ? `${body.title}: ${body.detail}` : body.detail;
  } catch {
    // not JSON: fall through to the SDK's message
  }
  return message;
}

/**
 * Stops a timed-out prediction so it does not run (and bill) on; best effort, briefly.
 * Returns the cancelled prediction as Replicate answered it (its run time is billed).
 */
async function cancelQuietly(options: ReplicateSoundscapeOptions, id: string): Promise<Prediction | undefined> {
  const replicate = new Replicate({ auth: options.apiToken, baseUrl: options.baseUrl, fetch: singleShotFetch(AbortSignal.timeout(2000)) });
  return await replicate.predictions.cancel(id).catch(() => undefined);
}
