import {
  BehaviourQueue, ConcurrencyCap, garbageBytes, hang, makeMp3, pause, sendAudio, sendEndless, sendJson, sendTruncated,
  startHttpServer, type FakeServer, type FakeServerOptions,
} from './http-server';

// OpenAI's text-to-speech endpoint as the `openai` SDK sees it on the wire:
// POST /v1/audio/speech, `Authorization: Bearer <key>`, audio/mpeg on success and
// {"error":{"message","type","param","code"}} on failure.

export type SpeechBehaviour =
  | 'ok'
  | 'rate-limited' // 429 with Retry-After
  | 'server-error' // 500
  | 'bad-request' // 400 with OpenAI's error body
  | 'hang' // never answers; the client must time out
  | 'truncated' // promises the whole MP3, sends half, drops the connection
  | 'garbage' // 200 audio/mpeg whose bytes are not audio
  | 'html' // 200 text/html, as a misconfigured proxy answers
  | 'endless' // 200 audio/mpeg with no length that never ends
  | { kind: 'rate-limited'; retryAfterSeconds: number }
  // The Retry-After header as written: an HTTP-date, a blank or a broken value.
  | { kind: 'rate-limited'; retryAfter: string }
  | { kind: 'server-error'; status: number }
  | { kind: 'bad-request'; message: string; param?: string; code?: string };

export type OpenAiSpeechFake = FakeServer<SpeechBehaviour>;

/** Seconds of audio per character: about 15 characters a second, like speech. */
const CHARS_PER_SECOND = 15;
const MAX_SECONDS = 3;

export interface OpenAiSpeechOptions extends FakeServerOptions {
  /** Chooses a behaviour from the input text when no scripted behaviour is queued. */
  decide?: (input: string) => SpeechBehaviour | undefined;
}

export async function startOpenAiSpeechServer(options: OpenAiSpeechOptions = {}): Promise<OpenAiSpeechFake> {
  const behaviours = new BehaviourQueue<SpeechBehaviour>();
  const cap = new ConcurrencyCap(options.maxConcurrent);
  await makeMp3(1); // fail at start, not mid-test, if ffmpeg cannot make MP3s

  const server = await startHttpServer(async ({ req, res, recorded, gone }) => {
    if (req.method !== 'POST' || recorded.path.split('?')[0] !== '/v1/audio/speech') {
      return sendJson(res, 404, openAiError(`Invalid URL (${req.method} ${recorded.path})`, 'invalid_request_error', null, null));
    }
    if (!/^Bearer \S+/.test(req.headers.authorization ?? '')) {
      return sendJson(res, 401, openAiError('You didn\'t provide an API key.', 'invalid_request_error', null, 'invalid_api_key'));
    }
    const body = recorded.body as { input?: unknown; model?: unknown; voice?: unknown } | undefined;
    if (typeof body?.input !== 'string' || body.input === '' || typeof body.model !== 'string' || typeof body.voice !== 'string') {
      return sendJson(res, 400, openAiError('input, model and voice are required.', 'invalid_request_error', 'input', null));
    }

    const behaviour = normalise(behaviours.next() ?? options.decide?.(body.input) ?? 'ok');
    switch (behaviour.kind) {
      case 'rate-limited':
        return sendJson(
          res, 429,
          openAiError(`Rate limit reached for ${body.model} on requests per min (RPM): Limit 50, Used 50, Requested 1. Please try again in ${behaviour.retryAfter}s.`, 'requests', null, 'rate_limit_exceeded'),
          { 'retry-after': behaviour.retryAfter },
        );
      case 'server-error':
        return sendJson(res, behaviour.status, openAiError('The server had an error while processing your request. Sorry about that!', 'server_error', null, null));
      case 'bad-request':
        return sendJson(res, 400, openAiError(behaviour.message, 'invalid_request_error', behaviour.param ?? null, behaviour.code ?? null));
      case 'hang':
        return hang(gone);
    }

    // Successful answers take `delayMs` each and at most `maxConcurrent` run at once.
    const release = await cap.acquire(gone);
    if (!release) return;
    try {
      await pause(options.delayMs ?? 0, gone);
      if (gone.aborted) return;
      const audio = await makeMp3(Math.min(MAX_SECONDS, Math.max(0.5, body.input.length / CHARS_PER_SECOND)));
      if (behaviour.kind === 'truncated') return sendTruncated(res, audio);
      if (behaviour.kind === 'endless') return await sendEndless(res, audio, gone);
      if (behaviour.kind === 'garbage') return sendAudio(res, garbageBytes());
      if (behaviour.kind === 'html') {
        res.writeHead(200, { 'content-type': 'text/html' });
        return void res.end('<html><body>Bad gateway</body></html>');
      }
      sendAudio(res, audio);
    } finally {
      release();
    }
  });

  return { ...server, script: (list) => behaviours.push(list) };
}

type Normalised =
  | { kind: 'ok' | 'hang' | 'truncated' | 'garbage' | 'html' | 'endless' }
  | { kind: 'rate-limited'; retryAfter: string }
  | { kind: 'server-error'; status: number }
  | { kind: 'bad-request'; message: string; param?: string; code?: string };

function normalise(behaviour: SpeechBehaviour): Normalised {
  if (typeof behaviour !== 'string') {
    return behaviour.kind === 'rate-limited' && 'retryAfterSeconds' in behaviour ? { kind: behaviour.kind, retryAfter: String(behaviour.retryAfterSeconds) } : behaviour;
  }
  if (behaviour === 'rate-limited') return { kind: behaviour, retryAfter: '7' };
  if (behaviour === 'server-error') return { kind: behaviour, status: 500 };
  if (behaviour === 'bad-request') {
    return { kind: behaviour, message: "Invalid value: 'nobody'. Supported values are: 'alloy', 'ash', 'coral'.", param: 'voice', code: 'invalid_value' };
  }
  return { kind: behaviour };
}

function openAiError(message: string, type: string, param: string | null, code: string | null) {
  return { error: { message, type, param, code } };
}
