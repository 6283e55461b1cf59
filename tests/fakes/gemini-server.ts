import { analyzeSpreadLocally } from '../../apps/worker/src/analysis/local';
import {
  BehaviourQueue, ConcurrencyCap, hang, pause, sendJson, startHttpServer, type FakeServer, type FakeServerOptions,
} from './http-server';

// The Gemini API's generateContent as @google/genai sees it on the wire:
// POST /v1beta/models/{model}:generateContent with `x-goog-api-key`, answering
// {candidates:[{content:{parts:[{text}],role:"model"},finishReason:"STOP"}],usageMetadata}
// and {"error":{"code","message","status"}} on failure.

export type GeminiBehaviour =
  | 'ok'
  | 'rate-limited' // 429 RESOURCE_EXHAUSTED with Retry-After and a RetryInfo detail
  | 'server-error' // 500 INTERNAL
  | 'bad-request' // 400 INVALID_ARGUMENT
  | 'hang'
  | 'not-json' // 200 whose model text is prose, not JSON
  | 'missing-fields' // 200 whose model text is JSON without most fields
  | { kind: 'ok'; answer: unknown }
  | { kind: 'held'; until: Promise<void> } // answers as 'ok' once `until` resolves (a call the test holds)
  // The delay in the body's RetryInfo detail, and in Retry-After unless `header` is false.
  | { kind: 'rate-limited'; retryAfterSeconds: number; header?: boolean }
  // The Retry-After header as written (an HTTP-date, a blank or a broken value), and a RetryInfo
  // detail only when `retryInfoSeconds` is given.
  | { kind: 'rate-limited'; retryAfter: string; retryInfoSeconds?: number }
  | { kind: 'server-error'; status: number }
  | { kind: 'bad-request'; message: string };

/** Turns the request's prompt text into the object the model "answers" (sent as JSON text). */
export type GeminiAnswer = (prompt: string) => unknown;

export interface GeminiFake extends FakeServer<GeminiBehaviour> {
  /** Replaceable at any time; default: defaultGeminiAnswer. */
  answer: GeminiAnswer;
}

/**
 * An answer that reads the spreads in the prompt, as a model would: the local keyword
 * analyzer's reading of them, so a book gets scene changes where its text changes.
 */
export const readingGeminiAnswer: GeminiAnswer = (prompt) => {
  const current = /Current spread \(number (\d+)\):\n"""\n([\s\S]*?)\n"""/.exec(prompt);
  const previous = /Previous spread:\n"""\n([\s\S]*?)\n"""/.exec(prompt);
  return analyzeSpreadLocally({ spreadIndex: Number(current?.[1] ?? 0), text: current?.[2] ?? '', previousText: previous?.[1] ?? null });
};

/** A plausible analysis: a new scene when the prompt says there is no previous spread. */
export const defaultGeminiAnswer: GeminiAnswer = (prompt) => ({
  sceneChanged: /no previous spread/i.test(prompt),
  setting: 'a quiet forest clearing',
  timeOfDay: 'dusk',
  mood: 'calm',
  ambience: ['wind in the trees', 'birdsong'],
  confidence: 0.8,
});

export async function startGeminiServer(options: FakeServerOptions & { answer?: GeminiAnswer } = {}): Promise<GeminiFake> {
  const behaviours = new BehaviourQueue<GeminiBehaviour>();
  const cap = new ConcurrencyCap(options.maxConcurrent);

  const server = await startHttpServer(async ({ req, res, recorded, gone }) => {
    const match = /^\/v1beta\/models\/([^/:]+):generateContent$/.exec(recorded.path.split('?')[0] ?? '');
    if (req.method !== 'POST' || !match) {
      return sendJson(res, 404, googleError(404, `Method not found: ${req.method} ${recorded.path}`, 'NOT_FOUND'));
    }
    if (!req.headers['x-goog-api-key']) {
      return sendJson(res, 403, googleError(403, 'Method doesn\'t allow unregistered callers. Please use API Key.', 'PERMISSION_DENIED'));
    }
    const prompt = promptText(recorded.body);

    const behaviour = behaviours.next() ?? 'ok';
    const kind = typeof behaviour === 'string' ? behaviour : behaviour.kind;
    if (kind === 'rate-limited') {
      const { retryAfter, retryInfoSeconds } = rateLimitOf(behaviour);
      // Google puts the delay in a RetryInfo detail; some front ends also send Retry-After.
      const body = googleError(
        429, 'Resource has been exhausted (e.g. check quota).', 'RESOURCE_EXHAUSTED',
        retryInfoSeconds === undefined ? undefined : [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${retryInfoSeconds}s` }],
      );
      return sendJson(res, 429, body, retryAfter === undefined ? {} : { 'retry-after': retryAfter });
    }
    if (kind === 'server-error') {
      const status = typeof behaviour === 'object' && behaviour.kind === 'server-error' ? behaviour.status : 500;
      return sendJson(res, status, googleError(status, 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting', 'INTERNAL'));
    }
    if (kind === 'bad-request') {
      const message = typeof behaviour === 'object' && behaviour.kind === 'bad-request'
        ? behaviour.message
        : `* GenerateContentRequest.model: unexpected model name format (${match[1]})`;
      return sendJson(res, 400, googleError(400, message, 'INVALID_ARGUMENT'));
    }
    if (kind === 'hang') return hang(gone);
    if (typeof behaviour === 'object' && behaviour.kind === 'held') {
      await Promise.race([behaviour.until, hang(gone)]);
      if (gone.aborted) return;
    }

    const release = await cap.acquire(gone);
    if (!release) return;
    try {
      await pause(options.delayMs ?? 0, gone);
      if (gone.aborted) return;
      let text: string;
      if (kind === 'not-json') text = 'Sure! This spread is set in a forest at dusk, and the mood is calm.';
      else if (kind === 'missing-fields') text = JSON.stringify({ setting: 'a forest' });
      else if (typeof behaviour === 'object' && behaviour.kind === 'ok') text = JSON.stringify(behaviour.answer);
      else text = JSON.stringify(fake.answer(prompt));
      const promptTokenCount = Math.ceil(prompt.length / 4);
      const candidatesTokenCount = Math.ceil(text.length / 4);
      sendJson(res, 200, {
        candidates: [{ content: { parts: [{ text }], role: 'model' }, finishReason: 'STOP', index: 0 }],
        usageMetadata: { promptTokenCount, candidatesTokenCount, totalTokenCount: promptTokenCount + candidatesTokenCount },
        modelVersion: match[1],
        responseId: `fake-${server.requests.length}`,
      });
    } finally {
      release();
    }
  });

  const fake: GeminiFake = {
    ...server,
    answer: options.answer ?? defaultGeminiAnswer,
    script: (list) => behaviours.push(list),
  };
  return fake;
}

/** A 429's Retry-After header and RetryInfo delay; undefined leaves it out. */
function rateLimitOf(behaviour: GeminiBehaviour): { retryAfter: string | undefined; retryInfoSeconds: number | undefined } {
  if (typeof behaviour !== 'object' || behaviour.kind !== 'rate-limited') return { retryAfter: '13', retryInfoSeconds: 13 };
  if ('retryAfter' in behaviour) return { retryAfter: behaviour.retryAfter, retryInfoSeconds: behaviour.retryInfoSeconds };
  return { retryAfter: behaviour.header === false ? undefined : String(behaviour.retryAfterSeconds), retryInfoSeconds: behaviour.retryAfterSeconds };
}

/** The text parts of the request's contents (not the system instruction), joined. */
function promptText(body: unknown): string {
  const request = (body ?? {}) as { contents?: Array<{ parts?: Array<{ text?: string }> }> };
  return (request.contents ?? []).flatMap((c) => c.parts ?? []).map((p) => p.text ?? '').join('\n');
}

function googleError(code: number, message: string, status: string, details?: unknown[]) {
  return { error: { code, message, status, ...(details ? { details } : {}) } };
}
