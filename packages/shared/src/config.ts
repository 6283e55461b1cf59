import { z } from 'zod';

// Environment is parsed once at boot into one typed object. Every service reads `config`
// (or calls loadConfig in tests with its own env) instead of touching process.env.

// Empty and whitespace-only values are dropped before parsing (loadConfig), so every
// variable treats them as unset and gets its default: `PORT=` must not coerce to 0 (a random
// port), and docker-compose passes variables through as `${VAR:-}`, which is "" when unset.
const optionalString = z.string().optional();

function hasProtocol(value: string, protocols: string[]): boolean {
  try {
    return protocols.includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

const url = (name: string, protocols: string[]) =>
  z.string().refine((v) => hasProtocol(v, protocols), {
    message: `${name} must be a ${protocols.map((p) => p.replace(':', '://')).join(' or ')} URL`,
  });

// Every optional URL is fetched (JWKS, S3, provider APIs) or printed as a link (PUBLIC_URL):
// ftp:, file: or javascript: would only fail later, or worse, be clicked.
const optionalUrl = (name: string) =>
  optionalString.refine((v) => v === undefined || hasProtocol(v, ['http:', 'https:']), { message: `${name} must be an http(s) URL` });

// Numbers are written in decimal digits, nothing else. Number() (and z.coerce) also reads
// 0x10, 0b11, 0o17 and 1e3: JOB_ATTEMPTS=0x10 was 16 attempts and WEBHOOK_TIMEOUT_MS=1e3 one
// second, a value that reads as one thing and means another. A leading minus before a number
// other than zero passes this check so that the range checks below can say what is wrong with
// it; on a zero (-0, -0.0) it is refused here, as a plus sign is: Number('-0') is -0, which
// every range check (`>= 0`) takes for 0, so PORT=-0 was a random port.
const DECIMAL_INTEGER = /^(?:-(?=\d*[1-9]))?\d+$/;
const DECIMAL_NUMBER = /^(?:-(?=[\d.]*[1-9]))?\d*\.?\d+$/;

const integerText = (name: string) =>
  z
    .string()
    .trim()
    .regex(DECIMAL_INTEGER, { error: (issue) => `${name} must be a whole number in decimal digits, not "${String(issue.input)}"` })
    .transform(Number);

const decimalText = (name: string) =>
  z
    .string()
    .trim()
    .regex(DECIMAL_NUMBER, { error: (issue) => `${name} must be a number in decimal digits (such as 0.012), not "${String(issue.input)}"` })
    .transform(Number);

// Past 2^53 digits no longer make the number they spell (and past about 1e308, Infinity).
const safeWhole = (name: string) =>
  z.number({ message: `${name} must be at most ${Number.MAX_SAFE_INTEGER}` }).int({ message: `${name} must be at most ${Number.MAX_SAFE_INTEGER}`, abort: true });

const wholePositive = (name: string) => safeWhole(name).positive({ message: `${name} must be greater than 0` });

const positiveInt = (name: string, fallback: number) => integerText(name).pipe(wholePositive(name)).default(fallback);

// Every check has its own message: one given to the number alone also stands for the checks
// without one, and a port of 99999 was reported as "must be a number".
const port = (name: string) =>
  integerText(name).pipe(
    safeWhole(name)
      .min(0, { message: `${name} must be 0-65535` })
      .max(65535, { message: `${name} must be 0-65535` }),
  );

// Node's timers take a signed 32-bit delay: a longer one is replaced by 1 ms, so a too-large
// heartbeat or poll interval would fire continuously instead of rarely. Every *_MS setting
// has the cap, the few only compared with ages too, so the rule has no exceptions.
const MAX_TIMER_MS = 2_147_483_647;

const milliseconds = (name: string, fallback: number) =>
  integerText(name)
    .pipe(wholePositive(name).max(MAX_TIMER_MS, { message: `${name} must be at most ${MAX_TIMER_MS} (about 24.8 days)` }))
    .default(fallback);

/** A price per unit in USD: 0 is allowed (a contract may make a provider free). */
const price = (name: string, fallback: number) =>
  decimalText(name)
    .pipe(z.number({ message: `${name} is too large` }).min(0, { message: `${name} must be 0 or more` }))
    .default(fallback);

// Case does not matter (TRUE, Yes): what people write in .env files and compose overrides
// varies, and each spelling here has one meaning. Anything else is refused, not read as false.
const TRUE_WORDS = ['true', 'yes', '1'];
const FALSE_WORDS = ['false', 'no', '0'];

const optionalBool = (name: string) =>
  optionalString
    .refine((v) => v === undefined || [...TRUE_WORDS, ...FALSE_WORDS].includes(v.trim().toLowerCase()), {
      error: (issue) => `${name} must be true or false (or yes/no, 1/0; any case), not "${String(issue.input)}"`,
    })
    .transform((v) => (v === undefined ? undefined : TRUE_WORDS.includes(v.trim().toLowerCase())));

const bool = (name: string, fallback: boolean) => optionalBool(name).transform((v) => v ?? fallback);

/** Parses "50/1s", "10/500ms", "600/1m" into a BullMQ limiter. */
export function parseRateLimit(value: string): { max: number; duration: number } | null {
  const match = /^(\d+)\s*\/\s*(\d+)?\s*(ms|s|m|h)$/.exec(value.trim());
  if (!match) return null;
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[match[3] as 'ms' | 's' | 'm' | 'h'];
  const max = Number(match[1]);
  const duration = Number(match[2] ?? 1) * unit;
  return max > 0 && duration > 0 ? { max, duration } : null;
}

const rateLimit = (name: string) =>
  optionalString
    .refine((v) => v === undefined || parseRateLimit(v) !== null, { message: `${name} must look like 50/1s (jobs per duration: ms, s, m or h)` })
    // The duration becomes the limiter's delay in milliseconds, a timer like any *_MS setting.
    .refine((v) => v === undefined || (parseRateLimit(v)?.duration ?? 0) <= MAX_TIMER_MS, {
      message: `${name}'s duration must be at most ${MAX_TIMER_MS} ms (about 24.8 days)`,
    })
    .transform((v) => (v === undefined ? undefined : parseRateLimit(v)!));

/**
 * A setting that takes one of a few words: read in any case and without surrounding blanks,
 * as the true/false settings are, and given in its canonical lower case; anything else is
 * refused with the words it may be.
 */
function choice<const T extends readonly [string, ...string[]]>(name: string, words: T) {
  const listed = words.length === 1 ? words[0] : `${words.slice(0, -1).join(', ')} or ${words.at(-1)}`;
  return z.preprocess(
    (v) => (typeof v === 'string' ? (words.find((w) => w === v.trim().toLowerCase()) ?? v) : v),
    z.enum(words, { error: (issue) => `${name} must be ${listed}, not "${String(issue.input)}"` }),
  );
}

// pino's levels (pino.levels.values) and 'silent' for no logs, in lower case as pino names them.
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const envSchema = z.object({
  NODE_ENV: choice('NODE_ENV', ['development', 'production', 'test']).default('development'),
  LOG_LEVEL: choice('LOG_LEVEL', LOG_LEVELS).default('info'),
  PORT: port('PORT').default(3000),
  PUBLIC_URL: optionalUrl('PUBLIC_URL'),
  DATABASE_URL: url('DATABASE_URL', ['postgres:', 'postgresql:']).default('postgres://postgres@127.0.0.1:5432/soundqueue'),
  DATABASE_POOL_SIZE: positiveInt('DATABASE_POOL_SIZE', 10),
  REDIS_URL: url('REDIS_URL', ['redis:', 'rediss:']).default('redis://127.0.0.1:6379'),
  QUEUE_PREFIX: z.string().min(1).default('soundqueue'),
  STORAGE_DIR: z.string().min(1).default('./data'),
  STORAGE_DRIVER: choice('STORAGE_DRIVER', ['local', 's3']).default('local'),
  S3_ENDPOINT: optionalUrl('S3_ENDPOINT'),
  S3_REGION: z.string().min(1).default('us-east-1'),
  S3_BUCKET: optionalString,
  S3_PREFIX: optionalString,
  S3_ACCESS_KEY_ID: optionalString,
  S3_SECRET_ACCESS_KEY: optionalString,
  // Unset: path-style when S3_ENDPOINT is set (MinIO, s3rver), virtual-hosted for AWS.
  S3_FORCE_PATH_STYLE: optionalBool('S3_FORCE_PATH_STYLE'),
  // The S3 client's connections. Each audio response being played holds one socket for as long
  // as it streams, so the pool is sized for players, not for the SDK's default of 50; the
  // timeouts make a store that does not answer an error instead of a request that waits forever.
  S3_MAX_SOCKETS: positiveInt('S3_MAX_SOCKETS', 256),
  S3_CONNECTION_TIMEOUT_MS: milliseconds('S3_CONNECTION_TIMEOUT_MS', 5_000),
  // Until the response's headers: an upload's request includes its 5 MiB part.
  S3_REQUEST_TIMEOUT_MS: milliseconds('S3_REQUEST_TIMEOUT_MS', 60_000),
  // A socket with no traffic for this long is closed, also mid-body (a store that stalls while
  // a worker downloads a voice). Longer than AUDIO_IDLE_TIMEOUT_MS, so a paused player's
  // response is ended by the API's own idle timeout, not cut as an S3 failure.
  S3_SOCKET_TIMEOUT_MS: milliseconds('S3_SOCKET_TIMEOUT_MS', 120_000),
  // An audio response whose client has read nothing for this long is ended: a paused <audio>
  // keeps its connection open without reading, and each such response holds a stored-object
  // stream (an S3 socket). Players resume with a Range request.
  AUDIO_IDLE_TIMEOUT_MS: milliseconds('AUDIO_IDLE_TIMEOUT_MS', 60_000),

  AUTH_JWT_SECRET: optionalString,
  AUTH_JWKS_URL: optionalUrl('AUTH_JWKS_URL'),
  // Checked on the identity provider's (JWKS) tokens: `aud` must hold one of these, `iss`
  // must be this. A comma-separated audience lists several.
  AUTH_JWT_AUDIENCE: optionalString.transform((v) => {
    const audiences = (v ?? '').split(',').map((a) => a.trim()).filter(Boolean);
    return audiences.length > 0 ? audiences : undefined;
  }),
  AUTH_JWT_ISSUER: optionalString,
  AUTH_SERVICE_TOKEN: optionalString,
  // Bearer token /metrics wants (the API's and a worker's); unset, /metrics answers anyone.
  // A bearer token is one word: one with spaces could never be sent, and scraping would fail.
  METRICS_TOKEN: optionalString.refine((v) => v === undefined || !/\s/.test(v), { message: 'METRICS_TOKEN must not contain spaces' }),

  WORKER_QUEUES: optionalString,
  WORKER_CONCURRENCY_AUDIO_TTS: positiveInt('WORKER_CONCURRENCY_AUDIO_TTS', 4),
  WORKER_CONCURRENCY_AUDIO_MIX: positiveInt('WORKER_CONCURRENCY_AUDIO_MIX', 2),
  WORKER_CONCURRENCY_AUDIO_BATCH: positiveInt('WORKER_CONCURRENCY_AUDIO_BATCH', 4),
  WORKER_CONCURRENCY_BOOK_ANALYZE: positiveInt('WORKER_CONCURRENCY_BOOK_ANALYZE', 8),
  WORKER_CONCURRENCY_SOUNDSCAPE: positiveInt('WORKER_CONCURRENCY_SOUNDSCAPE', 2),
  WORKER_CONCURRENCY_BOOK: positiveInt('WORKER_CONCURRENCY_BOOK', 4),
  WORKER_CONCURRENCY_WEBHOOKS: positiveInt('WORKER_CONCURRENCY_WEBHOOKS', 8),
  WORKER_LOCK_DURATION_MS: milliseconds('WORKER_LOCK_DURATION_MS', 30_000),
  WORKER_STALLED_INTERVAL_MS: milliseconds('WORKER_STALLED_INTERVAL_MS', 30_000),
  WORKER_MAX_STALLED_COUNT: positiveInt('WORKER_MAX_STALLED_COUNT', 3),
  RATE_LIMIT_MAX_RESTARTS: positiveInt('RATE_LIMIT_MAX_RESTARTS', 20),
  WORKER_METRICS_PORT: port('WORKER_METRICS_PORT').optional(),
  // Provider rate limits, global across every worker replica: "<jobs>/<duration>", e.g. 50/1s.
  TTS_RATE_LIMIT: rateLimit('TTS_RATE_LIMIT'),
  ANALYSIS_RATE_LIMIT: rateLimit('ANALYSIS_RATE_LIMIT'),
  SOUNDSCAPE_RATE_LIMIT: rateLimit('SOUNDSCAPE_RATE_LIMIT'),
  USER_MONTHLY_BUDGET_USD: decimalText('USER_MONTHLY_BUDGET_USD')
    .pipe(z.number({ message: 'USER_MONTHLY_BUDGET_USD is too large' }).positive({ message: 'USER_MONTHLY_BUDGET_USD must be greater than 0' }))
    .optional(),
  // Prices that turn provider usage into cost_usd: public list prices at the time of writing;
  // set them when your contract differs. OpenAI gpt-4o-mini-tts per 1,000 input characters
  // (about $0.015 a minute), Gemini Flash per 1,000 tokens (input and output blended),
  // Replicate per second of generation (GPU time, roughly). Local providers cost nothing.
  PRICE_OPENAI_TTS_PER_1K_CHARS: price('PRICE_OPENAI_TTS_PER_1K_CHARS', 0.012),
  PRICE_GEMINI_PER_1K_TOKENS: price('PRICE_GEMINI_PER_1K_TOKENS', 0.0004),
  PRICE_REPLICATE_PER_SECOND: price('PRICE_REPLICATE_PER_SECOND', 0.0014),
  JOB_ATTEMPTS: positiveInt('JOB_ATTEMPTS', 3),
  JOB_KEEP_COMPLETED: positiveInt('JOB_KEEP_COMPLETED', 1_000),
  JOB_KEEP_COMPLETED_SECONDS: positiveInt('JOB_KEEP_COMPLETED_SECONDS', 3_600),
  JOB_KEEP_FAILED: positiveInt('JOB_KEEP_FAILED', 5_000),
  JOB_KEEP_FAILED_SECONDS: positiveInt('JOB_KEEP_FAILED_SECONDS', 7 * 86_400),
  JOB_BACKOFF_MS: milliseconds('JOB_BACKOFF_MS', 2000),

  SPEECH_PROVIDER: choice('SPEECH_PROVIDER', ['openai', 'local']).optional(),
  OPENAI_API_KEY: optionalString,
  OPENAI_BASE_URL: optionalUrl('OPENAI_BASE_URL'),
  OPENAI_TTS_MODEL: z.string().min(1).default('gpt-4o-mini-tts'),
  PROVIDER_TIMEOUT_MS: milliseconds('PROVIDER_TIMEOUT_MS', 120_000),
  // The most bytes one audio answer of a provider (speech, soundscape) may have; see
  // apps/worker/src/provider-body.ts.
  PROVIDER_MAX_AUDIO_BYTES: positiveInt('PROVIDER_MAX_AUDIO_BYTES', 256 * 1024 * 1024),

  ANALYSIS_PROVIDER: choice('ANALYSIS_PROVIDER', ['gemini', 'local']).optional(),
  GEMINI_API_KEY: optionalString,
  GEMINI_BASE_URL: optionalUrl('GEMINI_BASE_URL'),
  GEMINI_MODEL: z.string().min(1).default('gemini-2.5-flash'),

  SOUNDSCAPE_PROVIDER: choice('SOUNDSCAPE_PROVIDER', ['replicate', 'local']).optional(),
  REPLICATE_API_TOKEN: optionalString,
  REPLICATE_BASE_URL: optionalUrl('REPLICATE_BASE_URL'),
  REPLICATE_SOUNDSCAPE_MODEL: z.string().min(1).default('meta/musicgen'),
  REPLICATE_POLL_INTERVAL_MS: milliseconds('REPLICATE_POLL_INTERVAL_MS', 1000),
  SOUNDSCAPE_SECONDS: positiveInt('SOUNDSCAPE_SECONDS', 60),

  BOOK_MAX_PAGES: positiveInt('BOOK_MAX_PAGES', 2000),
  BOOK_MAX_UPLOAD_BYTES: positiveInt('BOOK_MAX_UPLOAD_BYTES', 20 * 1024 * 1024),

  RECONCILE_INTERVAL_MS: milliseconds('RECONCILE_INTERVAL_MS', 60_000),
  // Work the database calls unfinished is only touched once it is this old, so a batch
  // whose flow is being added right now is never mistaken for lost work.
  RECONCILE_GRACE_MS: milliseconds('RECONCILE_GRACE_MS', 60_000),
  STUCK_AFTER_MS: milliseconds('STUCK_AFTER_MS', 6 * 3_600_000),
  STORAGE_SWEEP_INTERVAL_MS: milliseconds('STORAGE_SWEEP_INTERVAL_MS', 3_600_000),
  // A stored file younger than this may be about to be recorded by the job that stored it:
  // the sweep leaves it alone (apps/worker/src/storage-sweep.ts).
  STORAGE_SWEEP_GRACE_SECONDS: positiveInt('STORAGE_SWEEP_GRACE_SECONDS', 86_400),
  EVENT_LOG_TTL_SECONDS: positiveInt('EVENT_LOG_TTL_SECONDS', 86_400),
  EVENT_LOG_FINISHED_TTL_SECONDS: positiveInt('EVENT_LOG_FINISHED_TTL_SECONDS', 300),
  // Enqueueing a flow waits for Redis; past this the request gives up (503) instead of hanging.
  ENQUEUE_TIMEOUT_MS: milliseconds('ENQUEUE_TIMEOUT_MS', 5_000),
  SSE_HEARTBEAT_MS: milliseconds('SSE_HEARTBEAT_MS', 15_000),
  // Each open stream holds a socket, a listener and a heartbeat timer in one API process: one
  // user (a script, a page reopened in a loop) must not hold them without bound.
  SSE_MAX_STREAMS_PER_USER: positiveInt('SSE_MAX_STREAMS_PER_USER', 20),
  STREAM_TOKEN_TTL_SECONDS: positiveInt('STREAM_TOKEN_TTL_SECONDS', 300),
  PLAYBACK_URL_TTL_SECONDS: positiveInt('PLAYBACK_URL_TTL_SECONDS', 3600),

  ADMIN_USER: optionalString,
  ADMIN_PASSWORD: optionalString,
  ADMIN_READONLY: bool('ADMIN_READONLY', true),
  WEBHOOK_ALLOW_PRIVATE: bool('WEBHOOK_ALLOW_PRIVATE', false),
  // 10 attempts doubling from 3 minutes: the last one comes about a day (20–26 h, with jitter) after the first.
  WEBHOOK_ATTEMPTS: positiveInt('WEBHOOK_ATTEMPTS', 10),
  WEBHOOK_BACKOFF_MS: milliseconds('WEBHOOK_BACKOFF_MS', 180_000),
  WEBHOOK_TIMEOUT_MS: milliseconds('WEBHOOK_TIMEOUT_MS', 10_000),
});

const MIN_PRODUCTION_SECRET_LENGTH = 32;

export type Config = z.infer<typeof envSchema> & {
  speechProvider: 'openai' | 'local';
  analysisProvider: 'gemini' | 'local';
  soundscapeProvider: 'replicate' | 'local';
  S3_FORCE_PATH_STYLE: boolean;
};

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** Parses an environment; throws ConfigError listing every bad variable at once. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value.trim() !== ''));
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const name = issue.path.join('.');
        return issue.message.startsWith(name) ? issue.message : `${name}: ${issue.message}`;
      }),
    );
  }
  const c = parsed.data;
  const problems: string[] = [];
  if (c.SPEECH_PROVIDER === 'openai' && !c.OPENAI_API_KEY) problems.push('SPEECH_PROVIDER=openai needs OPENAI_API_KEY');
  if (c.ANALYSIS_PROVIDER === 'gemini' && !c.GEMINI_API_KEY) problems.push('ANALYSIS_PROVIDER=gemini needs GEMINI_API_KEY');
  if (c.SOUNDSCAPE_PROVIDER === 'replicate' && !c.REPLICATE_API_TOKEN) problems.push('SOUNDSCAPE_PROVIDER=replicate needs REPLICATE_API_TOKEN');
  if (Boolean(c.ADMIN_USER) !== Boolean(c.ADMIN_PASSWORD)) problems.push('ADMIN_USER and ADMIN_PASSWORD must be set together');
  // Basic credentials are split at their first colon (RFC 7617): such a user could never log in.
  if (c.ADMIN_USER?.includes(':')) problems.push('ADMIN_USER must not contain a colon (HTTP basic auth splits user and password at the first one)');
  if (c.STORAGE_DRIVER === 's3' && !c.S3_BUCKET) problems.push('STORAGE_DRIVER=s3 needs S3_BUCKET');
  if (Boolean(c.S3_ACCESS_KEY_ID) !== Boolean(c.S3_SECRET_ACCESS_KEY)) problems.push('S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together');
  if (c.STORAGE_DRIVER === 's3' && c.S3_SOCKET_TIMEOUT_MS <= c.AUDIO_IDLE_TIMEOUT_MS) {
    problems.push('S3_SOCKET_TIMEOUT_MS must be longer than AUDIO_IDLE_TIMEOUT_MS (a paused player would otherwise be cut off as an S3 failure)');
  }
  if (c.S3_PREFIX !== undefined && !/^[a-zA-Z0-9][a-zA-Z0-9._-]*(\/[a-zA-Z0-9][a-zA-Z0-9._-]*)*\/?$/.test(c.S3_PREFIX)) {
    problems.push('S3_PREFIX must be a relative path like soundqueue/prod (letters, digits, . _ - and /)');
  }
  // Stream and playback tokens are HS256-signed with AUTH_JWT_SECRET and travel in URLs, so
  // they end up in logs and browser history; one of them is enough to guess a short secret
  // offline. The service token is a standing admin credential, and the metrics token guards
  // an endpoint on the public port, so the same length holds for both.
  if (c.NODE_ENV === 'production') {
    for (const name of ['AUTH_JWT_SECRET', 'AUTH_SERVICE_TOKEN', 'METRICS_TOKEN'] as const) {
      const value = c[name];
      if (value !== undefined && value.length < MIN_PRODUCTION_SECRET_LENGTH) {
        problems.push(`${name} must be at least ${MIN_PRODUCTION_SECRET_LENGTH} characters in production; make one with: openssl rand -hex 32`);
      }
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    ...c,
    // A provider with a key is used unless told otherwise; no key means the local one.
    speechProvider: c.SPEECH_PROVIDER ?? (c.OPENAI_API_KEY ? 'openai' : 'local'),
    analysisProvider: c.ANALYSIS_PROVIDER ?? (c.GEMINI_API_KEY ? 'gemini' : 'local'),
    soundscapeProvider: c.SOUNDSCAPE_PROVIDER ?? (c.REPLICATE_API_TOKEN ? 'replicate' : 'local'),
    S3_FORCE_PATH_STYLE: c.S3_FORCE_PATH_STYLE ?? c.S3_ENDPOINT !== undefined,
  };
}
