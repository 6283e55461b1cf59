import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { z } from 'zod';
import { ValidationError } from '@soundqueue/shared/errors';
import type { Logger } from '@soundqueue/shared/logger';

// Every error the API answers has one shape: {"error":{"code","message","details"}}.

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown = null,
  ) {
    super(message);
  }
}

export const notFound = (what = 'resource') => new HttpError(404, 'not_found', `${what} not found`);

// PostgreSQL's text and jsonb cannot hold U+0000, and jsonb refuses an unpaired surrogate
// ("\ud800" is valid JSON but not Unicode): strings carrying either were accepted and then
// failed the insert with a 500. They are bad input, named as such.
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** No request this API takes nests deeper; a deeper body is refused before anything walks it. */
export const MAX_BODY_DEPTH = 32;

interface Visit {
  value: unknown;
  key: string | null;
  parent: Visit | null;
  depth: number;
}

/** The keys from the input's root to `visit`, built only for the one value reported. */
function pathOf(visit: Visit): string[] {
  const path: string[] = [];
  for (let v: Visit | null = visit; v && v.key !== null; v = v.parent) path.push(v.key);
  return path.reverse();
}

/**
 * The path of the first string (or key) in `input` PostgreSQL cannot store, or of a value
 * nested deeper than MAX_BODY_DEPTH. Iterative, and each value keeps only a link to its
 * parent: copying the path at every level made a 60,000-deep body take 30 s of the event loop.
 */
function findUnstorable(input: unknown): { path: string[]; message: string } | null {
  const stack: Visit[] = [{ value: input, key: null, parent: null, depth: 0 }];
  while (stack.length > 0) {
    const visit = stack.pop()!;
    const { value } = visit;
    if (typeof value === 'string') {
      const match = UNSTORABLE.exec(value);
      if (match) return { path: pathOf(visit), message: match[0] === '\u0000' ? 'must not contain the NUL character (\\u0000)' : 'must not contain an unpaired UTF-16 surrogate' };
    } else if (value !== null && typeof value === 'object') {
      if (visit.depth >= MAX_BODY_DEPTH) return { path: pathOf(visit), message: `must not nest more than ${MAX_BODY_DEPTH} levels deep` };
      for (const [key, child] of Object.entries(value)) {
        const next: Visit = { value: child, key, parent: visit, depth: visit.depth + 1 };
        if (UNSTORABLE.test(key)) return { path: pathOf(next), message: 'field names must be valid text without NUL' };
        stack.push(next);
      }
    }
  }
  return null;
}

/** Parses input with a zod schema, answering 400 with every problem listed. */
export function validate<S extends z.ZodType>(schema: S, input: unknown, where = 'body'): z.infer<S> {
  const unstorable = findUnstorable(input);
  if (unstorable) {
    const path = [where, ...unstorable.path].join('.');
    throw new HttpError(400, 'validation_failed', `${path}: ${unstorable.message}`, [{ path, message: unstorable.message }]);
  }
  const result = schema.safeParse(input);
  if (!result.success) {
    const details = result.error.issues.map((issue) => ({
      path: [where, ...issue.path.map(String)].join('.'),
      message: issue.message,
    }));
    const first = details[0];
    throw new HttpError(400, 'validation_failed', first ? `${first.path}: ${first.message}` : 'invalid request', details);
  }
  return result.data;
}

/** POST bodies are JSON: anything else is a 415, said plainly, before any work. */
export const requireJson: RequestHandler = (req, _res, next) => {
  if (!req.is('application/json')) {
    next(new HttpError(415, 'unsupported_media_type', 'Content-Type must be application/json'));
    return;
  }
  next();
};

export const unknownRoute: RequestHandler = (req, _res, next) => {
  next(new HttpError(404, 'not_found', `no route for ${req.method} ${req.path}`));
};

const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', '57P01', '57P02', '57P03', '08000', '08001', '08003', '08004', '08006']);

/** A store that is down (PostgreSQL restarting, Redis away) is a 503, not a bug: retry later. */
function isStoreUnavailable(error: unknown): boolean {
  for (let e = error as { code?: unknown; name?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && UNAVAILABLE_CODES.has(e.code)) return true;
    if (e.name === 'MaxRetriesPerRequestError') return true;
    if (typeof e.message === 'string' && /Connection terminated|timeout exceeded when trying to connect|Connection is closed/.test(e.message)) return true;
  }
  return false;
}

export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (error, req, res, _next) => {
    const e = error as { type?: string; status?: number; statusCode?: number; code?: string; message?: string; limit?: number };
    let http: HttpError;
    if (error instanceof HttpError) http = error;
    else if (error instanceof ValidationError) http = new HttpError(400, error.code, error.message);
    else if (e.type === 'entity.parse.failed') http = new HttpError(400, 'invalid_json', 'request body is not valid JSON');
    else if (e.type === 'entity.too.large' || e.code === 'LIMIT_FILE_SIZE')
      http = new HttpError(413, 'payload_too_large', `request body is larger than the limit${e.limit ? ` of ${e.limit} bytes` : ''}`);
    else if (e.type === 'encoding.unsupported' || e.type === 'charset.unsupported')
      http = new HttpError(415, 'unsupported_media_type', e.message ?? 'unsupported encoding');
    else if (typeof e.code === 'string' && e.code.startsWith('LIMIT_'))
      http = new HttpError(400, 'invalid_upload', e.message ?? 'invalid upload');
    else if ((e.status ?? e.statusCode ?? 500) < 500 && typeof e.message === 'string')
      http = new HttpError(e.status ?? e.statusCode ?? 400, 'bad_request', e.message);
    else if (isStoreUnavailable(error)) {
      logger.warn({ err: (error as Error).message, method: req.method, path: req.path }, 'a store is unavailable');
      res.setHeader('Retry-After', '5');
      http = new HttpError(503, 'service_unavailable', 'a database or queue is temporarily unavailable; retry shortly');
    } else {
      logger.error({ err: error, method: req.method, path: req.path }, 'request failed');
      http = new HttpError(500, 'internal_error', 'internal error; the failure was logged');
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    // Every 503 is a moment's outage of something this service depends on.
    if (http.status === 503 && !res.hasHeader('Retry-After')) res.setHeader('Retry-After', '5');
    res.status(http.status).json({ error: { code: http.code, message: http.message, details: http.details } });
  };
}
