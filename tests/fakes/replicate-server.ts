import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import {
  BehaviourQueue, ConcurrencyCap, garbageBytes, hang, makeMp3, sendAudio, sendJson, sendTruncated,
  startHttpServer, type FakeServer, type FakeServerOptions,
} from './http-server';

// Replicate's prediction API as the `replicate` SDK (v1.4) calls it:
//   POST /v1/models/{owner}/{name}/predictions   (model "owner/name")
//   POST /v1/predictions {version}                (model "owner/name:version")
//   GET  /v1/predictions/{id}                     (replicate.wait polls this)
//   POST /v1/predictions/{id}/cancel
// plus GET /files/{id}.mp3, standing in for replicate.delivery (no auth, like the real one).
// Errors are {"detail","status"}. A prediction's reported status moves at most one step per
// poll (starting → processing → succeeded/failed), so a client always polls a time or two.
// `delayMs` is each prediction's run time and `maxConcurrent` caps running predictions:
// beyond it, predictions stay "starting", as on an account at its concurrency limit.

export type ReplicateBehaviour =
  | 'ok'
  | 'rate-limited' // 429 with Retry-After (any request)
  | 'server-error' // 500 (any request)
  | 'bad-request' // 422 input validation, Replicate's answer to bad input (any request)
  | 'hang' // no answer (any request)
  | 'prediction-failed' // on a create: the prediction ends "failed" with an error text
  | 'truncated' // on a create or a file download: the file is cut off mid-transfer
  | 'garbage' // on a create or a file download: the file's bytes are not audio
  | { kind: 'rate-limited'; retryAfterSeconds: number }
  // The Retry-After header as written: an HTTP-date, a blank or a broken value.
  | { kind: 'rate-limited'; retryAfter: string }
  | { kind: 'server-error'; status: number }
  | { kind: 'bad-request'; status?: number; detail: string }
  | { kind: 'prediction-failed'; error: string };

export type ReplicateFake = FakeServer<ReplicateBehaviour> & {
  /** Every prediction made, oldest first, with the run time it reports once ended (what Replicate bills). */
  readonly predictions: { id: string; predictTime: number | undefined }[];
};

type Outcome = { kind: 'ok' | 'truncated' | 'garbage' } | { kind: 'failed'; error: string };
const STEPS = ['starting', 'processing', 'done'] as const;
const MAX_SECONDS = 3;

interface FakePrediction {
  id: string;
  model: string;
  version: string;
  input: Record<string, unknown>;
  outcome: Outcome;
  /** Where the prediction really is, and what the last poll was told. */
  step: number;
  reported: number;
  canceled: boolean;
  createdAt: Date;
  startedAt?: Date;
  completedAt?: Date;
  stopWaiting: AbortController;
}

export interface ReplicateServerOptions extends FakeServerOptions {
  /** Chooses a behaviour per request (method, path) when no scripted behaviour is queued. */
  decide?: (method: string, path: string) => ReplicateBehaviour | undefined;
}

export async function startReplicateServer(options: ReplicateServerOptions = {}): Promise<ReplicateFake> {
  const behaviours = new BehaviourQueue<ReplicateBehaviour>();
  const cap = new ConcurrencyCap(options.maxConcurrent);
  const predictions = new Map<string, FakePrediction>();
  const timers = new Set<NodeJS.Timeout>();
  await makeMp3(1); // fail at start, not mid-test, if ffmpeg cannot make MP3s

  const server = await startHttpServer(async ({ req, res, recorded, gone }) => {
    const path = recorded.path.split('?')[0] ?? '';
    const behaviour = behaviours.next() ?? options.decide?.(req.method ?? 'GET', path) ?? 'ok';
    const kind = typeof behaviour === 'string' ? behaviour : behaviour.kind;
    if (kind === 'hang') return hang(gone);
    if (kind === 'rate-limited') {
      if (typeof behaviour === 'object' && 'retryAfter' in behaviour) {
        return sendJson(res, 429, { detail: 'Request was throttled.', status: 429 }, { 'retry-after': behaviour.retryAfter });
      }
      const seconds = typeof behaviour === 'object' && 'retryAfterSeconds' in behaviour ? behaviour.retryAfterSeconds : 5;
      return sendJson(res, 429, { detail: `Request was throttled. Expected available in ${seconds} seconds.`, status: 429 }, { 'retry-after': String(seconds) });
    }
    if (kind === 'server-error') {
      const status = typeof behaviour === 'object' && 'status' in behaviour ? (behaviour.status ?? 500) : 500;
      return sendJson(res, status, { detail: 'Internal server error', status });
    }
    if (kind === 'bad-request') {
      const b = typeof behaviour === 'object' && 'detail' in behaviour ? behaviour : undefined;
      const status = b?.status ?? 422;
      return sendJson(res, status, { title: 'Input validation failed', detail: b?.detail ?? '- input.duration: Must be less than or equal to 30', status });
    }

    const file = /^\/files\/([\w-]+)\.mp3$/.exec(path);
    if (req.method === 'GET' && file) return serveFile(res, predictions.get(file[1] ?? ''), kind);

    if (!/^Bearer \S+/.test(req.headers.authorization ?? '')) {
      return sendJson(res, 401, { title: 'Unauthenticated', detail: 'You did not pass a valid authentication token', status: 401 });
    }
    const byModel = /^\/v1\/models\/([^/]+)\/([^/]+)\/predictions$/.exec(path);
    if (req.method === 'POST' && (byModel || path === '/v1/predictions')) {
      const body = (recorded.body ?? {}) as { input?: unknown; version?: unknown };
      if (typeof body.input !== 'object' || body.input === null) {
        return sendJson(res, 422, { title: 'Input validation failed', detail: '- input: Invalid type. Expected: object', status: 422 });
      }
      if (!byModel && typeof body.version !== 'string') {
        return sendJson(res, 422, { title: 'Invalid version', detail: 'version is required', status: 422 });
      }
      const prediction = create(
        byModel ? `${byModel[1]}/${byModel[2]}` : 'unknown/model',
        byModel ? `fake-version-of-${byModel[2]}` : String(body.version),
        body.input as Record<string, unknown>,
        outcomeOf(behaviour),
      );
      return sendJson(res, 201, view(prediction));
    }
    const one = /^\/v1\/predictions\/([\w-]+)(\/cancel)?$/.exec(path);
    const prediction = one ? predictions.get(one[1] ?? '') : undefined;
    if (!one || !prediction) return sendJson(res, 404, { detail: 'Not found.', status: 404 });
    if (req.method === 'POST' && one[2]) {
      cancel(prediction);
      return sendJson(res, 200, view(prediction));
    }
    if (req.method === 'GET' && !one[2]) {
      prediction.reported = Math.min(prediction.step, prediction.reported + 1);
      return sendJson(res, 200, view(prediction));
    }
    return sendJson(res, 405, { detail: 'Method not allowed.', status: 405 });
  });

  function create(model: string, version: string, input: Record<string, unknown>, outcome: Outcome): FakePrediction {
    const prediction: FakePrediction = {
      id: randomBytes(13).toString('hex'),
      model, version, input, outcome,
      step: 0, reported: 0, canceled: false,
      createdAt: new Date(),
      stopWaiting: new AbortController(),
    };
    predictions.set(prediction.id, prediction);
    void cap.acquire(prediction.stopWaiting.signal).then((release) => {
      if (!release) return;
      prediction.step = 1;
      prediction.startedAt = new Date();
      const timer = setTimeout(() => {
        timers.delete(timer);
        release();
        if (prediction.canceled) return;
        prediction.step = 2;
        prediction.completedAt = new Date();
      }, options.delayMs ?? 0);
      timers.add(timer);
      // Cancelling a running prediction frees its slot at once.
      prediction.stopWaiting.signal.addEventListener('abort', () => release(), { once: true });
    });
    return prediction;
  }

  function cancel(prediction: FakePrediction): void {
    // An ended prediction stays as it ended, and the answer says how (as Replicate's does).
    if (prediction.step === 2) {
      prediction.reported = 2;
      return;
    }
    prediction.canceled = true;
    prediction.step = 2;
    prediction.reported = 2;
    prediction.completedAt = new Date();
    prediction.stopWaiting.abort();
  }

  function view(p: FakePrediction) {
    const done = p.reported === 2;
    const status = done ? (p.canceled ? 'canceled' : p.outcome.kind === 'failed' ? 'failed' : 'succeeded') : STEPS[p.reported];
    const succeeded = status === 'succeeded';
    const api = `${server.url}/v1/predictions/${p.id}`;
    return {
      id: p.id,
      model: p.model,
      version: p.version,
      input: p.input,
      logs: succeeded ? 'Generating audio…\nDone.\n' : '',
      output: succeeded ? `${server.url}/files/${p.id}.mp3` : null,
      data_removed: false,
      error: status === 'failed' && p.outcome.kind === 'failed' ? p.outcome.error : null,
      status,
      source: 'api',
      created_at: p.createdAt.toISOString(),
      started_at: p.reported >= 1 ? p.startedAt?.toISOString() : undefined,
      completed_at: done ? p.completedAt?.toISOString() : undefined,
      urls: { get: api, cancel: `${api}/cancel`, web: `https://replicate.com/p/${p.id}` },
      metrics: done && predictTime(p) !== undefined ? { predict_time: predictTime(p) } : undefined,
    };
  }

  async function serveFile(res: ServerResponse, prediction: FakePrediction | undefined, kind: string): Promise<void> {
    if (!prediction || prediction.step !== 2 || prediction.outcome.kind === 'failed') {
      return sendJson(res, 404, { detail: 'Not found.', status: 404 });
    }
    const outcome = kind === 'truncated' || kind === 'garbage' ? kind : prediction.outcome.kind;
    if (outcome === 'garbage') return sendAudio(res, garbageBytes());
    const requested = Number(prediction.input.duration);
    const audio = await makeMp3(Math.min(MAX_SECONDS, Number.isFinite(requested) && requested > 0 ? requested : 1), 220);
    if (outcome === 'truncated') return sendTruncated(res, audio);
    sendAudio(res, audio);
  }

  return {
    ...server,
    script: (list) => behaviours.push(list),
    get predictions() {
      return [...predictions.values()].map((p) => ({ id: p.id, predictTime: predictTime(p) }));
    },
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      for (const p of predictions.values()) p.stopWaiting.abort();
      await server.close();
    },
  };
}

/** Seconds from start to end, once it has both. */
function predictTime(p: FakePrediction): number | undefined {
  return p.startedAt && p.completedAt ? Math.max(0.001, (p.completedAt.getTime() - p.startedAt.getTime()) / 1000) : undefined;
}

function outcomeOf(behaviour: ReplicateBehaviour): Outcome {
  if (behaviour === 'truncated' || behaviour === 'garbage') return { kind: behaviour };
  if (behaviour === 'prediction-failed') {
    return { kind: 'failed', error: 'CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity)' };
  }
  if (typeof behaviour === 'object' && behaviour.kind === 'prediction-failed') return { kind: 'failed', error: behaviour.error };
  return { kind: 'ok' };
}
