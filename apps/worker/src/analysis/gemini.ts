import { ApiError, GoogleGenAI, Type, type GenerateContentResponse, type Schema } from '@google/genai';
import { spreadAnalysisSchema, type SpreadAnalysis } from '@soundqueue/shared/analysis';
import { ContentAnalysisError, isRetryableStatus, type Billed } from '@soundqueue/shared/errors';
import { parseRetryAfter } from '@soundqueue/shared/retry-after';
import type { AnalysisProvider, AnalysisRequest, AnalysisResult } from './types';

// Spread analysis by Gemini through @google/genai, with JSON-schema output. The queue is the
// one place that retries (DESIGN.md): @google/genai only retries when `httpOptions.retryOptions`
// is set, so we never set it, and `automaticContinuation: false` keeps one call one request.

export interface GeminiAnalysisOptions {
  apiKey: string;
  /** e.g. "https://generativelanguage.googleapis.com" (the SDK's default) or a test server. */
  baseUrl?: string;
  model: string;
  timeoutMs: number;
  /** USD per 1,000 tokens, input and output (PRICE_GEMINI_PER_1K_TOKENS). */
  pricePer1kTokens: number;
}

const responseSchema: Schema = {
  type: Type.OBJECT,
  properties: {
    sceneChanged: { type: Type.BOOLEAN, description: 'True when this spread starts a new scene.' },
    setting: { type: Type.STRING, description: 'Where this spread takes place, in a few words.' },
    timeOfDay: { type: Type.STRING, description: 'e.g. dawn, noon, night, unknown.' },
    mood: { type: Type.STRING, description: 'The emotional tone, in one to three words.' },
    ambience: { type: Type.ARRAY, items: { type: Type.STRING }, maxItems: '8', description: 'Sounds one would hear.' },
    confidence: { type: Type.NUMBER, minimum: 0, maximum: 1 },
  },
  required: ['sceneChanged', 'setting', 'timeOfDay', 'mood', 'ambience', 'confidence'],
  propertyOrdering: ['sceneChanged', 'setting', 'timeOfDay', 'mood', 'ambience', 'confidence'],
};

const systemInstruction =
  'You analyse the pages of a book so that an ambient soundscape can play under them. ' +
  'You read two consecutive spreads (two pages each) and describe only the current one.';

export function buildAnalysisPrompt(request: AnalysisRequest): string {
  const previous = request.previousText === null
    ? 'There is no previous spread: this is the first spread of the book.'
    : `Previous spread:\n"""\n${request.previousText}\n"""`;
  return [
    previous,
    `Current spread (number ${request.spreadIndex}):\n"""\n${request.text}\n"""`,
    'Does a new scene start in the current spread (a new place, a jump in time, or a clear change of situation), ' +
      'compared with the previous spread? Then describe the current spread: setting, time of day, mood, ' +
      'up to 8 short ambience sounds (e.g. "rain on a roof", "crackling fire"), and your confidence from 0 to 1.',
  ].join('\n\n');
}

export function createGeminiAnalysisProvider(options: GeminiAnalysisOptions): AnalysisProvider {
  // No retryOptions: the SDK then makes exactly one fetch per call (see ApiClient.apiCall).
  const ai = new GoogleGenAI({ apiKey: options.apiKey, httpOptions: { baseUrl: options.baseUrl, timeout: options.timeoutMs } });

  return {
    name: 'gemini',
    async analyze(request: AnalysisRequest, signal?: AbortSignal): Promise<AnalysisResult> {
      // The SDK's ApiError keeps only status and body; Retry-After needs the response headers,
      // so this call's fetch notes them.
      let errorHeaders: Headers | undefined;
      const noteHeaders: typeof fetch = async (input, init) => {
        const response = await fetch(input, init);
        if (!response.ok) errorHeaders = response.headers;
        return response;
      };
      let response: GenerateContentResponse;
      try {
        response = await ai.models.generateContent({
          model: options.model,
          contents: buildAnalysisPrompt(request),
          config: {
            systemInstruction,
            responseMimeType: 'application/json',
            responseSchema,
            temperature: 0.2,
            automaticContinuation: false,
            abortSignal: signal,
            httpOptions: { fetch: noteHeaders },
          },
        });
      } catch (error) {
        throw toAnalysisError(error, { signal, timeoutMs: options.timeoutMs, headers: errorHeaders });
      }
      const tokens = response.usageMetadata?.totalTokenCount ?? 0;
      const costUsd = (tokens * options.pricePer1kTokens) / 1000;
      const analysis = parseAnalysis(response, { units: tokens, costUsd });
      // The first spread always opens a scene, whatever the model says.
      if (request.previousText === null) analysis.sceneChanged = true;
      return { analysis, usage: { tokens }, costUsd };
    },
  };
}

/** The analysis in Gemini's answer. Its tokens are `billed` whether or not the answer is usable. */
function parseAnalysis(response: GenerateContentResponse, billed: Billed): SpreadAnalysis {
  const blocked = response.promptFeedback?.blockReason;
  if (blocked) {
    // The same text is blocked the same way next time: fail at once.
    throw new ContentAnalysisError(`Gemini refused to analyse this spread (prompt blocked: ${blocked})`, { retryable: false, billed });
  }
  const text = response.text;
  const finishReason = response.candidates?.[0]?.finishReason;
  if (!text) throw new ContentAnalysisError(`Gemini answered without text (finishReason ${finishReason ?? 'none'})`, { billed });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ContentAnalysisError(
      `Gemini answered text that is not JSON (finishReason ${finishReason ?? 'none'}): ${text.slice(0, 200)}`,
      { billed },
    );
  }
  const parsed = spreadAnalysisSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ContentAnalysisError(`Gemini's analysis does not match the schema: ${problems}`, { billed });
  }
  return parsed.data;
}

function toAnalysisError(
  error: unknown,
  context: { signal: AbortSignal | undefined; timeoutMs: number; headers: Headers | undefined },
): ContentAnalysisError {
  if (error instanceof ContentAnalysisError) return error;
  if (context.signal?.aborted) return new ContentAnalysisError('Gemini analysis request was cancelled', { cause: error });
  // The SDK aborts its own fetch at `timeout` (the body included) with an AbortError.
  if (error instanceof Error && (error.name === 'AbortError' || error.name === 'TimeoutError')) {
    return new ContentAnalysisError(`Gemini API did not answer within ${context.timeoutMs} ms`, { cause: error });
  }
  if (error instanceof ApiError) {
    const body = parseGoogleError(error.message);
    return new ContentAnalysisError(`Gemini API answered ${error.status}: ${body.message}`, {
      status: error.status,
      retryable: isRetryableStatus(error.status),
      retryAfterSeconds: parseRetryAfter(context.headers?.get('retry-after')) ?? body.retryDelaySeconds,
      cause: error,
    });
  }
  const reason = error instanceof Error
    ? `${error.message}${error.cause instanceof Error ? ` (${error.cause.message})` : ''}`
    : String(error);
  return new ContentAnalysisError(`Gemini API could not be reached: ${reason}`, { cause: error });
}

/** ApiError's message is the JSON error body: pull out its message and any RetryInfo delay. */
function parseGoogleError(raw: string): { message: string; retryDelaySeconds: number | undefined } {
  try {
    const { error } = JSON.parse(raw) as {
      error?: { message?: unknown; status?: unknown; details?: Array<{ '@type'?: string; retryDelay?: string }> };
    };
    const retryInfo = error?.details?.find((d) => d['@type']?.endsWith('google.rpc.RetryInfo'));
    const delay = retryInfo?.retryDelay ? Number.parseFloat(retryInfo.retryDelay) : Number.NaN;
    const status = typeof error?.status === 'string' ? `${error.status}: ` : '';
    return {
      message: typeof error?.message === 'string' ? `${status}${error.message}` : raw,
      retryDelaySeconds: Number.isFinite(delay) ? Math.ceil(delay) : undefined,
    };
  } catch {
    return { message: raw, retryDelaySeconds: undefined };
  }
}
