import OpenAI, { APIConnectionTimeoutError, APIError } from 'openai';
import { SpeechGenerationError, isRetryableStatus } from '@soundqueue/shared/errors';
import { parseRetryAfter } from '@soundqueue/shared/retry-after';
import type { SpeechProvider, SpeechRequest, SpeechResult } from './types';
import { readAudioBody } from '../provider-body';

// OpenAI text-to-speech through the `openai` SDK. The queue is the one place that retries
// (DESIGN.md, Providers), so the SDK's own retries are off and every failure becomes a
// SpeechGenerationError that says whether another attempt can help.

export interface OpenAiSpeechOptions {
  apiKey: string;
  /** e.g. "https://api.openai.com/v1" (the SDK's default) or a test server's ".../v1". */
  baseURL?: string;
  /** Deadline for the whole call, the audio body included. */
  timeoutMs: number;
  /** The most bytes the audio may have (PROVIDER_MAX_AUDIO_BYTES). */
  maxAudioBytes: number;
  /** USD per 1,000 input characters (PRICE_OPENAI_TTS_PER_1K_CHARS). */
  pricePer1kChars: number;
}

export function createOpenAiSpeechProvider(options: OpenAiSpeechOptions): SpeechProvider {
  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseURL,
    // maxRetries 0: the SDK would otherwise re-send 408/409/429/5xx twice, honouring
    // Retry-After itself, before the queue's own attempts (DESIGN.md).
    maxRetries: 0,
    timeout: options.timeoutMs,
  });

  return {
    name: 'openai',
    usesInstructions: true,
    async synthesize(request: SpeechRequest, signal?: AbortSignal): Promise<SpeechResult> {
      // The SDK's timeout stops at the response headers; a body that stalls halfway would hang
      // without our own deadline, which also aborts the body read.
      const deadline = AbortSignal.timeout(options.timeoutMs);
      const combined = signal ? AbortSignal.any([signal, deadline]) : deadline;
      let audio: Buffer;
      let contentType: string;
      try {
        const response = await client.audio.speech.create(
          {
            model: request.model,
            voice: request.voice,
            input: request.text,
            // An empty string would be sent as-is; tts-1 rejects instructions altogether.
            ...(request.instructions ? { instructions: request.instructions } : {}),
            response_format: 'mp3',
          },
          { signal: combined },
        );
        contentType = response.headers.get('content-type') ?? '';
        audio = await readAudioBody(response, options.maxAudioBytes, (message) => new SpeechGenerationError(`OpenAI speech API answered 200, but ${message}`));
      } catch (error) {
        throw toSpeechError(error, { deadline, signal, timeoutMs: options.timeoutMs });
      }
      checkAudio(audio, contentType);
      const characters = request.text.length;
      return {
        audio,
        format: 'mp3',
        usage: { characters },
        costUsd: (options.pricePer1kChars * characters) / 1000,
      };
    },
  };
}

/**
 * A 200 that is not MP3 (a proxy's HTML page, a JSON error, random bytes) must not be stored
 * as a voice track. It is retryable: the same request usually succeeds next time. The worker
 * still ffprobes before storing; this catches the cheap cases with a clearer message.
 */
function checkAudio(audio: Buffer, contentType: string): void {
  if (/json|html|text\//i.test(contentType)) {
    const preview = audio.subarray(0, 200).toString('utf8').replace(/\s+/g, ' ');
    throw new SpeechGenerationError(`OpenAI speech API answered 200 with ${contentType} instead of audio: ${preview}`);
  }
  if (audio.length === 0) throw new SpeechGenerationError('OpenAI speech API answered 200 with an empty body');
  if (sniffAudioFormat(audio) !== 'mp3') {
    throw new SpeechGenerationError(
      `OpenAI speech API answered 200 (${contentType || 'no content-type'}) but the ${audio.length} bytes are not MP3 (they start with ${audio.subarray(0, 8).toString('hex')})`,
    );
  }
}

/**
 * Recognises MP3 (an ID3v2 tag, then an MPEG audio frame header) and WAV by their first
 * bytes. Not a decoder: a cut-off MP3 still passes; ffprobe is the final word.
 */
export function sniffAudioFormat(audio: Buffer): 'mp3' | 'wav' | undefined {
  if (audio.length >= 12 && audio.toString('latin1', 0, 4) === 'RIFF' && audio.toString('latin1', 8, 12) === 'WAVE') return 'wav';
  let offset = 0;
  if (audio.length >= 10 && audio.toString('latin1', 0, 3) === 'ID3') {
    // The tag size is four 7-bit bytes; a footer (flag bit 4) adds ten more.
    const size = ((audio[6]! & 0x7f) << 21) | ((audio[7]! & 0x7f) << 14) | ((audio[8]! & 0x7f) << 7) | (audio[9]! & 0x7f);
    offset = 10 + size + (audio[5]! & 0x10 ? 10 : 0);
  }
  if (audio.length < offset + 4) return undefined;
  const [b0, b1, b2] = [audio[offset]!, audio[offset + 1]!, audio[offset + 2]!];
  const frameSync = b0 === 0xff && (b1 & 0xe0) === 0xe0;
  const valid = ((b1 >> 3) & 0x3) !== 1 && ((b1 >> 1) & 0x3) !== 0 && b2 >> 4 !== 0xf && ((b2 >> 2) & 0x3) !== 3;
  return frameSync && valid ? 'mp3' : undefined;
}

function toSpeechError(
  error: unknown,
  context: { deadline: AbortSignal; signal: AbortSignal | undefined; timeoutMs: number },
): SpeechGenerationError {
  if (error instanceof SpeechGenerationError) return error;
  if (context.signal?.aborted) {
    return new SpeechGenerationError('OpenAI speech request was cancelled', { cause: error });
  }
  if (context.deadline.aborted || error instanceof APIConnectionTimeoutError) {
    return new SpeechGenerationError(`OpenAI speech API did not answer within ${context.timeoutMs} ms`, { cause: error });
  }
  if (error instanceof APIError && error.status !== undefined) {
    const body = error.error as { message?: unknown } | undefined;
    const detail = typeof body?.message === 'string' ? body.message : error.message;
    return new SpeechGenerationError(`OpenAI speech API answered ${error.status}: ${detail}`, {
      status: error.status,
      retryable: isRetryableStatus(error.status),
      retryAfterSeconds: parseRetryAfter(error.headers?.get('retry-after')),
      cause: error,
    });
  }
  // Connection refused or reset, DNS, a body cut off mid-transfer: worth another attempt.
  const reason = error instanceof Error ? describeCause(error) : String(error);
  return new SpeechGenerationError(`OpenAI speech API could not be reached or the transfer broke off: ${reason}`, { cause: error });
}

/** "Connection error. (fetch failed: connect ECONNREFUSED …)": the SDK wraps undici's error twice. */
function describeCause(error: Error): string {
  const causes: string[] = [];
  for (let c = error.cause; c instanceof Error && causes.length < 3; c = c.cause) causes.push(c.message);
  return causes.length ? `${error.message} (${causes.join(': ')})` : error.message;
}
