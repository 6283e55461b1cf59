import { z } from 'zod';
import { createBatchSchema } from './batches/batch-request';
import { jsonBookSchema } from './books/book-input';
import { adminBatchesQuery, analyticsQuery } from './routes/admin.routes';
import { batchListQuery } from './routes/batches.routes';
import { bookListQuery } from './routes/books.routes';
import { playbackUrlSchema } from './routes/playback.routes';
import { createWebhookSchema, deliveriesQuery } from './routes/webhooks.routes';

// The API described for /openapi.json and /docs. Request bodies and query parameters come
// from the same zod schemas the routes validate with, so the description cannot drift from
// the checks.

const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const error = { $ref: '#/components/schemas/Error' };
const errors = (...codes: number[]) =>
  Object.fromEntries(codes.map((code) => [String(code), { description: describeStatus(code), ...json(error) }]));

function describeStatus(code: number): string {
  return (
    {
      400: 'invalid input',
      401: 'missing or bad token',
      402: 'monthly budget spent',
      403: 'admin role required',
      404: 'not found (or not yours)',
      409: 'conflict with the current state',
      412: 'precondition_failed: If-Match or If-Unmodified-Since does not hold',
      413: 'too large',
      415: 'unsupported content type',
      416: 'range not satisfiable',
      422: 'unprocessable book',
      429: "too_many_streams: SSE_MAX_STREAMS_PER_USER of this user's event streams are open, counted across every API process (Retry-After)",
      503: 'queue_unavailable: the queue refused the work, recorded as failed (nothing waits); or a store or the JWKS endpoint is unavailable: retry after Retry-After',
    } as Record<number, string>
  )[code] ?? 'error';
}

// Every /v1 route can answer these: the auth middleware's 401, and 503 when PostgreSQL, Redis
// or (with AUTH_JWKS_URL) the identity provider's keys cannot be reached.
const V1_ERRORS = [401, 503];

const id = (name: string) => ({ name, in: 'path', required: true, schema: { type: 'string', format: 'uuid' } });
/** The audio routes also take a playback URL's token instead of the Authorization header. */
const playbackToken = { name: 'playback_token', in: 'query', required: false, schema: { type: 'string' }, description: 'from POST /v1/playback-urls, for this file only' };
/** An event stream's resume point and its EventSource token (see sse.ts and auth.ts). */
const streamParams = [
  { name: 'Last-Event-ID', in: 'header', required: false, schema: { type: 'string' }, description: 'resume after this event id' },
  { name: 'lastEventId', in: 'query', required: false, schema: { type: 'string' }, description: 'as Last-Event-ID, for clients that cannot set headers (the header wins)' },
  { name: 'access_token', in: 'query', required: false, schema: { type: 'string' }, description: 'a stream token from POST /v1/stream-tokens, instead of the Authorization header (no other token is taken here)' },
];
const conditional = [
  { name: 'Range', in: 'header', schema: { type: 'string' }, description: 'one range (bytes=0-99, bytes=100-, bytes=-500); several, or one that does not parse, get the whole file' },
  { name: 'If-Range', in: 'header', schema: { type: 'string' }, description: "the file's ETag, or exactly its Last-Modified date: Range is served only while it is current (another tag or date gets the whole file; a date holds once the second it names is over)" },
  { name: 'If-None-Match', in: 'header', schema: { type: 'string' } },
  { name: 'If-Modified-Since', in: 'header', schema: { type: 'string' }, description: 'read only without If-None-Match' },
  { name: 'If-Match', in: 'header', schema: { type: 'string' } },
  { name: 'If-Unmodified-Since', in: 'header', schema: { type: 'string' }, description: 'read only without If-Match' },
];
/** The routes a URL's token opens: the bearer token, or that token in the query string. */
const byPlaybackToken = [{ bearer: [] }, { playbackToken: [] }];
const byStreamToken = [{ bearer: [] }, { streamToken: [] }];
/**
 * A GET route and its HEAD, which Express answers on every GET route: documented where a
 * client uses it (a player probing a file's size, a client checking a stream before opening it).
 */
const withHead = <T extends { summary: string }>(get: T) => ({ get, head: { ...get, summary: `${get.summary}: the GET's status and headers, without the body` } });
const notModified = { description: "If-None-Match holds the file's ETag (or, without it, If-Modified-Since is not before Last-Modified)" };
const audio = { description: 'MP3 (HTTP Range supported)', content: { 'audio/mpeg': { schema: { type: 'string', format: 'binary' } } } };
const events = { description: 'Server-Sent Events: snapshot, then changes, ending after the terminal event', content: { 'text/event-stream': { schema: { type: 'string' } } } };
/** A reconnect that already has the end: EventSource stops reconnecting on a 204. */
const ended = { description: 'resumed (Last-Event-ID or lastEventId) with the end already received: nothing more, stop reconnecting' };
/** Besides a store being down: this process going away, when another replica answers. */
const unavailable = { description: 'the database or Redis is unavailable: retry after Retry-After', ...json(error) };

export function openApiDocument() {
  // What the routes check cannot be said in JSON Schema (a refine) becomes "any value" there.
  const schema = (s: z.ZodType) => z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' });
  /** A route's query parameters, from the zod object it validates req.query with. */
  const query = (s: z.ZodObject) => {
    const { properties = {}, required = [] } = schema(s) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
    return Object.entries(properties).map(([name, property]) => {
      const { $schema: _, ...rest } = property;
      // With io: 'input', a field with a default is not required (the route fills it in).
      return { name, in: 'query', required: required.includes(name) && !('default' in rest), schema: rest };
    });
  };
  const document = {
    openapi: '3.1.0',
    info: { title: 'soundqueue', version: '1.0.0', description: 'Voice-track batches and book soundscapes, made in the background with live progress.' },
    servers: [{ url: '/' }],
    security: [{ bearer: [] }],
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
        metricsToken: { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN, wanted by /metrics only when it is set' },
        streamToken: { type: 'apiKey', in: 'query', name: 'access_token', description: 'a stream token from POST /v1/stream-tokens: event streams only (EventSource cannot send headers)' },
        playbackToken: { type: 'apiKey', in: 'query', name: 'playback_token', description: 'the token of a URL from POST /v1/playback-urls: that one audio file only (<audio src> cannot send headers)' },
      },
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: { error: { type: 'object', required: ['code', 'message', 'details'], properties: { code: { type: 'string' }, message: { type: 'string' }, details: {} } } },
        },
      },
    },
    paths: {
      '/v1/audio/batches': {
        post: {
          summary: 'Create a batch and enqueue its flow',
          parameters: [{ name: 'Idempotency-Key', in: 'header', schema: { type: 'string', minLength: 1, maxLength: 200 } }],
          requestBody: { required: true, ...json(schema(createBatchSchema)) },
          responses: { 201: { description: 'created' }, 200: { description: 'idempotent repeat' }, ...errors(400, 401, 402, 409, 413, 415, 503) },
        },
        get: {
          summary: "The user's batches, newest first",
          parameters: query(batchListQuery),
          responses: { 200: { description: 'a page of batches with next_cursor' }, ...errors(400, 401) },
        },
      },
      '/v1/audio/batches/{id}': { get: { summary: 'A batch with every track', parameters: [id('id')], responses: { 200: { description: 'the batch' }, ...errors(401, 404) } } },
      '/v1/audio/batches/{id}/retry': { post: { summary: 'Re-run only the failed tracks', parameters: [id('id')], responses: { 202: { description: 'processing again' }, ...errors(401, 402, 404, 409, 503) } } },
      '/v1/audio/batches/{id}/cancel': { post: { summary: 'Cancel tracks not started', parameters: [id('id')], responses: { 202: { description: 'cancelling' }, ...errors(401, 404, 409) } } },
      '/v1/audio/batches/{id}/events': withHead({ summary: 'Live progress (SSE); Last-Event-ID resumes', security: byStreamToken, parameters: [id('id'), ...streamParams], responses: { 200: events, 204: ended, ...errors(401, 404, 429), 503: unavailable } }),
      '/v1/audio/sets/{id}': { get: { summary: "A variant's set with its tracks", parameters: [id('id')], responses: { 200: { description: 'the set' }, ...errors(401, 404) } } },
      '/v1/audio/tracks/{id}/audio': withHead({ summary: 'The mixed track', security: byPlaybackToken, parameters: [id('id'), ...conditional, playbackToken], responses: { 200: audio, 206: audio, 304: notModified, ...errors(401, 404, 409, 412, 416) } }),
      '/v1/audio/variants': { get: { summary: 'The variant catalog', responses: { 200: { description: 'variants' } } } },
      '/v1/audio/voices': { get: { summary: 'The voice catalog', responses: { 200: { description: 'voices' } } } },
      '/v1/books': {
        post: {
          summary: 'Upload a book and start processing',
          requestBody: {
            required: true,
            content: {
              'application/json': { schema: schema(jsonBookSchema) },
              'multipart/form-data': { schema: { type: 'object', required: ['file'], additionalProperties: false, properties: { file: { type: 'string', format: 'binary', description: '.txt or .pdf' }, title: { type: 'string' }, author: { type: 'string' } } } },
            },
          },
          responses: { 202: { description: 'processing' }, ...errors(400, 401, 402, 413, 415, 422, 503) },
        },
        get: { summary: "The user's books, newest first", parameters: query(bookListQuery), responses: { 200: { description: 'a page of books with nextCursor' }, ...errors(400, 401) } },
      },
      '/v1/books/{id}': { get: { summary: "The book's state in the seed's response formats", parameters: [id('id')], responses: { 200: { description: 'the book' }, ...errors(401, 404) } } },
      '/v1/books/{id}/scenes': { get: { summary: 'The scene timeline', parameters: [id('id')], responses: { 200: { description: 'scenes' }, ...errors(401, 404) } } },
      '/v1/books/{id}/soundscapes': { post: { summary: 'Start generation again', parameters: [id('id')], responses: { 202: { description: 'processing' }, ...errors(401, 402, 404, 409, 503) } } },
      '/v1/books/{id}/events': withHead({ summary: 'Live progress (SSE)', security: byStreamToken, parameters: [id('id'), ...streamParams], responses: { 200: events, 204: ended, ...errors(401, 404, 429), 503: unavailable } }),
      '/v1/soundscapes/{id}/audio': withHead({ summary: "A scene's soundscape", security: byPlaybackToken, parameters: [id('id'), ...conditional, playbackToken], responses: { 200: audio, 206: audio, 304: notModified, ...errors(401, 404, 409, 412, 416) } }),
      '/v1/playback-urls': {
        post: {
          summary: "A URL an <audio> element can play: the audio_url with a token good for that file only (GET/HEAD, Range) for PLAYBACK_URL_TTL_SECONDS",
          requestBody: { required: true, ...json(schema(playbackUrlSchema)) },
          responses: { 201: { description: '{url, expires_in}' }, ...errors(400, 401, 404, 413, 415) },
        },
      },
      '/v1/stream-tokens': { post: { summary: 'A short-lived token for EventSource (?access_token=)', responses: { 201: { description: '{token, expires_in}' }, ...errors(401) } } },
      '/v1/webhooks': {
        post: { summary: 'Register an endpoint (returns its signing secret once)', requestBody: { required: true, ...json(schema(createWebhookSchema)) }, responses: { 201: { description: 'the endpoint with its secret' }, ...errors(400, 401, 413, 415) } },
        get: { summary: 'List endpoints', responses: { 200: { description: 'endpoints' }, ...errors(401) } },
      },
      '/v1/webhooks/{id}': {
        get: { summary: 'One endpoint', parameters: [id('id')], responses: { 200: { description: 'the endpoint' }, ...errors(401, 404) } },
        delete: { summary: 'Remove an endpoint', parameters: [id('id')], responses: { 204: { description: 'removed' }, ...errors(401, 404) } },
      },
      '/v1/webhooks/{id}/deliveries': {
        get: {
          summary: "The endpoint's deliveries, newest first, each with every attempt (attempt_log)",
          parameters: [id('id'), ...query(deliveriesQuery)],
          responses: { 200: { description: 'a page of deliveries with next_cursor' }, ...errors(400, 401, 404) },
        },
      },
      '/v1/admin/analytics': { get: { summary: 'Success rates, failures, timings, cost (admin); since defaults to 30 days ago', parameters: query(analyticsQuery), responses: { 200: { description: 'figures' }, ...errors(400, 401, 403) } } },
      '/v1/admin/batches': { get: { summary: 'Batches across all users, newest first (admin)', parameters: query(adminBatchesQuery), responses: { 200: { description: 'batches, each with its user_id' }, ...errors(400, 401, 403) } } },
      '/healthz': { get: { summary: 'Liveness', security: [], responses: { 200: { description: 'ok' } } } },
      '/readyz': { get: { summary: 'Readiness (Redis, over both API connections, and PostgreSQL)', security: [], responses: { 200: { description: 'ready' }, 503: { description: 'names what is unreachable', ...json(error) } } } },
      '/metrics': {
        get: {
          summary: 'Prometheus metrics',
          // No credentials unless METRICS_TOKEN is set; then its bearer token.
          security: [{}, { metricsToken: [] }],
          responses: { 200: { description: 'text exposition format' }, 401: { description: 'METRICS_TOKEN is set and was not sent (WWW-Authenticate: Bearer)', ...json(error) } },
        },
      },
    },
  };
  for (const [path, operations] of Object.entries(document.paths)) {
    if (!path.startsWith('/v1/')) continue;
    for (const operation of Object.values(operations) as { responses: Record<string, unknown> }[]) {
      for (const code of V1_ERRORS) operation.responses[code] ??= errors(code)[code];
      // An id that is not valid percent-encoding (%ZZ) is refused before the route reads it.
      if (path.includes('{id}')) operation.responses[400] ??= { description: 'bad_request: the path is not valid percent-encoding', ...json(error) };
    }
  }
  return document;
}
