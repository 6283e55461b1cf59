import { UnrecoverableError } from 'bullmq';
import { DrizzleQueryError } from 'drizzle-orm/errors';

// The named failures of soundqueue. `code` is stable (clients and dashboards key on it);
// `retryable` says whether another attempt can help. The worker turns a non-retryable error
// into BullMQ's UnrecoverableError (toJobError) so the queue stops at once instead of
// burning attempts.

export type ErrorType =
  | 'ValidationError'
  | 'SpeechGenerationError'
  | 'MixingError'
  | 'ContentAnalysisError'
  | 'SoundscapeGenerationError'
  | 'DatabaseError';

/** A provider call's usage (characters, tokens or seconds) and its cost in USD. */
export interface Billed {
  units: number;
  costUsd: number;
}

export abstract class SoundqueueError extends Error {
  abstract readonly code: string;
  readonly retryable: boolean;
  /** Seconds the provider asked us to wait (a 429's Retry-After), when it said. */
  readonly retryAfterSeconds: number | undefined;
  /** The provider's HTTP status, when the failure came from one. */
  readonly status: number | undefined;
  /**
   * What the provider charged for the call although its answer could not be used (a Gemini
   * answer that is not the JSON asked for, a Replicate prediction that succeeded but whose file
   * is not audio): the call's provider_calls row records it, as the month's budget must.
   */
  readonly billed: Billed | undefined;

  constructor(
    message: string,
    options: { retryable?: boolean; cause?: unknown; retryAfterSeconds?: number; status?: number; billed?: Billed } = {},
  ) {
    super(message, { cause: options.cause });
    this.retryable = options.retryable ?? true;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.status = options.status;
    this.billed = options.billed;
  }

  get errorType(): ErrorType {
    return this.name as ErrorType;
  }
}

export class ValidationError extends SoundqueueError {
  override name = 'ValidationError';
  readonly code = 'validation_failed';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { ...options, retryable: false });
  }
}

export class SpeechGenerationError extends SoundqueueError {
  override name = 'SpeechGenerationError';
  readonly code = 'speech_generation_failed';
}

export class MixingError extends SoundqueueError {
  override name = 'MixingError';
  readonly code = 'mixing_failed';
}

export class ContentAnalysisError extends SoundqueueError {
  override name = 'ContentAnalysisError';
  readonly code = 'content_analysis_failed';
}

export class SoundscapeGenerationError extends SoundqueueError {
  override name = 'SoundscapeGenerationError';
  readonly code = 'soundscape_generation_failed';
}

export class DatabaseError extends SoundqueueError {
  override name = 'DatabaseError';
  readonly code = 'database_error';
}

/**
 * Classifies a provider's HTTP status: 408 (the provider timed out reading the request), 409
 * (a conflict on its side, e.g. a concurrent request), 429 and 5xx (and no status: a network
 * fault or a timeout) are worth another attempt; any other 4xx is our request's fault and is not.
 */
export function isRetryableStatus(status: number | undefined): boolean {
  if (status === undefined) return true;
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

/**
 * drizzle wraps every failed query as "Failed query: <the SQL>\nparams: …", with the reason
 * (connection refused, a lock timeout) only in `cause`: as a job's failure reason or a track's
 * message that shows SQL instead of what went wrong. This says what went wrong; the SQL stays
 * in `cause` for the logs.
 */
export function fromDatabaseError(error: unknown): unknown {
  if (!(error instanceof DrizzleQueryError)) return error;
  const reason = error.cause instanceof Error ? error.cause.message : 'unknown error';
  return new DatabaseError(`a database query failed: ${reason}`, { cause: error });
}

/** What a processor throws: retryable errors as they are, the rest as UnrecoverableError. */
export function toJobError(thrown: unknown): Error {
  const error = fromDatabaseError(thrown);
  if (error instanceof SoundqueueError && !error.retryable) {
    const unrecoverable = new UnrecoverableError(`${error.name}: ${error.message}`);
    return unrecoverable;
  }
  return error instanceof Error ? error : new Error(String(error));
}

/** The type and a person-readable message for a failure row. */
export function describeError(thrown: unknown, fallback: ErrorType): { errorType: ErrorType; message: string } {
  const error = fromDatabaseError(thrown);
  if (error instanceof SoundqueueError) return { errorType: error.errorType, message: error.message };
  const message = error instanceof Error ? error.message : String(error);
  return { errorType: fallback, message };
}
