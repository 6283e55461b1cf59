import { sql } from 'drizzle-orm';
import {
  bigint,
  check,
  doublePrecision,
  index,
  integer,
  jsonb,
  numeric,
  pgTable,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

// Every table of soundqueue. PostgreSQL is the source of truth: Redis holds only the work
// in flight, and the reconciler rebuilds it from these rows. Statuses are text with CHECK
// constraints (not pg enums) so adding a state is a plain migration.

const timestamps = {
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
};
const money = (name: string) => numeric(name, { precision: 14, scale: 6, mode: 'number' }).notNull().default(0);
// The row's version, raised by one on every UPDATE by a trigger (migration 0004), so no
// statement can forget it. Progress events carry the state a transition committed but reach
// Redis in the order their workers publish, which is not always the commit order: clients
// (and the API's event streams) keep the highest version they applied and ignore a lower
// one. Never indexed: the rows it is on change in place (HOT, see audio_tracks below).
const rowVersion = () => bigint('version', { mode: 'number' }).notNull().default(1);

export const batchStatuses = ['pending', 'processing', 'completed', 'partial_success', 'failed', 'cancelled'] as const;
export type BatchStatus = (typeof batchStatuses)[number];
export const trackStatuses = ['pending', 'generating', 'mixing', 'completed', 'failed', 'cancelled'] as const;
export type TrackStatus = (typeof trackStatuses)[number];
export const terminalTrackStatuses = ['completed', 'failed', 'cancelled'] as const;

export interface SectionRequest {
  key: string;
  title: string | null;
  text: string;
}

export const audioGenerationBatches = pgTable(
  'audio_generation_batches',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: text('user_id').notNull(),
    visionId: text('vision_id').notNull(),
    status: text('status', { enum: batchStatuses }).notNull().default('pending'),
    variantIds: jsonb('variant_ids').$type<string[]>().notNull(),
    voiceId: text('voice_id').notNull(),
    model: text('model').notNull(),
    // The request's sections with their text: the tts jobs read the text from here, so a
    // job payload never carries 20,000 characters through Redis.
    sectionsRequested: jsonb('sections_requested').$type<SectionRequest[]>().notNull(),
    // Invariant 1 (also a CHECK below): completed + failed + cancelled + pending = expected,
    // and each counter equals the count of its track rows. `pending` counts every track that
    // is not terminal (pending, generating, mixing). Counters change only in the transaction
    // that moves a track, guarded by a conditional update of the track row.
    totalTracksExpected: integer('total_tracks_expected').notNull(),
    tracksCompleted: integer('tracks_completed').notNull().default(0),
    tracksFailed: integer('tracks_failed').notNull().default(0),
    tracksCancelled: integer('tracks_cancelled').notNull().default(0),
    tracksPending: integer('tracks_pending').notNull(),
    audioSetIds: jsonb('audio_set_ids').$type<string[]>().notNull().default([]),
    errorMessage: text('error_message'),
    // Unique per user (partial index below): a repeated POST with the same key returns this
    // batch; request_hash tells a true repeat from a different body under the same key (the
    // body as sent, without the default model filled in; older rows hash the body with the
    // batch's model: apps/api/src/batches/batch-request.ts).
    idempotencyKey: text('idempotency_key'),
    requestHash: text('request_hash').notNull(),
    // Each retry of failed tracks is a new run: job ids carry it, so a retry never collides
    // with the finished jobs of the run before.
    run: integer('run').notNull().default(1),
    version: rowVersion(),
    cancelRequestedAt: timestamp('cancel_requested_at', { withTimezone: true }),
    costUsd: money('cost_usd'),
    startedAt: timestamp('started_at', { withTimezone: true }),
    completedAt: timestamp('completed_at', { withTimezone: true }),
    ...timestamps,
  },
  (t) => [
    index('batches_user_vision_idx').on(t.userId, t.visionId),
    index('batches_status_idx').on(t.status),
    index('batches_created_at_idx').on(t.createdAt),
    index('batches_user_status_idx').on(t.userId, t.status),
    uniqueIndex('batches_user_idempotency_key_idx')
      .on(t.userId, t.idempotencyKey)
      .where(sql`${t.idempotencyKey} is not null`),
    check(
      'batches_counters_add_up',
      sql`${t.tracksCompleted} + ${t.tracksFailed} + ${t.tracksCancelled} + ${t.tracksPending} = ${t.totalTracksExpected}`,
    ),
    check(
      'batches_counters_non_negative',
      sql`${t.tracksCompleted} >= 0 and ${t.tracksFailed} >= 0 and ${t.tracksCancelled} >= 0 and ${t.tracksPending} >= 0`,
    ),
  ],
);

export const audioSets = pgTable(
  'audio_sets',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    batchId: uuid('batch_id')
      .notNull()
      .references(() => audioGenerationBatches.id, { onDelete: 'cascade' }),
    userId: text('user_id').notNull(),
    variantId: text('variant_id').notNull(),
    ...timestamps,
  },
  (t) => [uniqueIndex('audio_sets_batch_variant_idx').on(t.batchId, t.variantId), index('audio_sets_user_idx').on(t.userId)],
);

export const audioTracks = pgTable(
  'audio_tracks',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    batchId: uuid('batch_id')
      .notNull()
      .references(() => audioGenerationBatches.id, { onDelete: 'cascade' }),
    setId: uuid('set_id')
      .notNull()
      .references(() => audioSets.id, { onDelete: 'cascade' }),
    userId: text('user_id').notNull(),
    sectionIndex: integer('section_index').notNull(),
    sectionKey: text('section_key').notNull(),
    sectionTitle: text('section_title'),
    variantId: text('variant_id').notNull(),
    // pending → generating → mixing → completed | failed | cancelled. A terminal status is
    // written once, by a conditional update that also moves the batch counters.
    status: text('status', { enum: trackStatuses }).notNull().default('pending'),
    mixStatus: text('mix_status', { enum: ['pending', 'mixing', 'completed', 'failed', 'skipped'] })
      .notNull()
      .default('pending'),
    // Null until the voice rendition exists; many tracks may point at one rendition.
    renditionKey: text('rendition_key'),
    voiceFileKey: text('voice_file_key'),
    mixedFileKey: text('mixed_file_key'),
    mixedBytes: integer('mixed_bytes'),
    durationMs: integer('duration_ms'),
    errorType: text('error_type'),
    errorMessage: text('error_message'),
    attempts: integer('attempts').notNull().default(0),
    costUsd: money('cost_usd'),
    version: rowVersion(),
    startedAt: timestamp('started_at', { withTimezone: true }),
    completedAt: timestamp('completed_at', { withTimezone: true }),
    ...timestamps,
  },
  (t) => [
    uniqueIndex('audio_tracks_set_section_idx').on(t.setId, t.sectionKey),
    // Not (batch_id, status): a batch has at most a few dozen tracks, and with status out of
    // every index a transition is a HOT update that writes no index entry (migration 0002 also
    // leaves 20 % of each page free for those updates, as for batches, whose counters change
    // with every finished track; drizzle has no table option for fillfactor).
    index('audio_tracks_batch_idx').on(t.batchId),
    index('audio_tracks_user_idx').on(t.userId),
  ],
);

export const voiceRenditions = pgTable('voice_renditions', {
  // sha256 of (provider, text, voice, model, instructions when the provider uses them).
  keyHash: text('key_hash').primaryKey(),
  // A row in `generating` is a claim: its holder synthesizes while everyone else with the
  // same key waits (single flight across worker replicas). A claim older than its lease is
  // taken over, so a killed worker never blocks the key for good.
  status: text('status', { enum: ['generating', 'ready'] }).notNull(),
  claimToken: text('claim_token'),
  claimedAt: timestamp('claimed_at', { withTimezone: true }),
  provider: text('provider').notNull(),
  voiceId: text('voice_id').notNull(),
  model: text('model').notNull(),
  storageKey: text('storage_key'),
  format: text('format'),
  durationMs: integer('duration_ms'),
  // Measured once per rendition so each variant's mix skips a loudness pass over the voice.
  loudnessLufs: doublePrecision('loudness_lufs'),
  characters: integer('characters').notNull(),
  costUsd: money('cost_usd'),
  ...timestamps,
});

export const bookStatuses = ['pending', 'processing', 'ready', 'failed'] as const;
export type BookStatus = (typeof bookStatuses)[number];

export interface ProcessingError {
  timestamp: string;
  spreadIndex: number;
  pages: string;
  errorType: 'ValidationError' | 'ContentAnalysisError' | 'SoundscapeGenerationError' | 'DatabaseError' | 'QueueError';
  message: string;
  stack: string | null;
  attempt: number;
}

export const books = pgTable(
  'books',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: text('user_id').notNull(),
    title: text('title').notNull(),
    author: text('author'),
    status: text('status', { enum: bookStatuses }).notNull().default('pending'),
    pageCount: integer('page_count').notNull(),
    spreadCount: integer('spread_count').notNull(),
    // Per run: processed + failed spreads never exceed spread_count; each equals the count
    // of its spread rows. soundscapes_generated counts completed soundscape rows.
    processedSpreads: integer('processed_spreads').notNull().default(0),
    failedSpreads: integer('failed_spreads').notNull().default(0),
    scenesCreated: integer('scenes_created').notNull().default(0),
    soundscapesGenerated: integer('soundscapes_generated').notNull().default(0),
    soundscapesFailed: integer('soundscapes_failed').notNull().default(0),
    errorCount: integer('error_count').notNull().default(0),
    processingErrors: jsonb('processing_errors').$type<ProcessingError[]>().notNull().default([]),
    processingTimeSeconds: doublePrecision('processing_time_seconds'),
    // Per-step wall times in ms (analysis, segmentation, soundscapes), for metrics.
    stepTimings: jsonb('step_timings').$type<Record<string, number>>().notNull().default({}),
    run: integer('run').notNull().default(1),
    version: rowVersion(),
    costUsd: money('cost_usd'),
    startedAt: timestamp('started_at', { withTimezone: true }),
    completedAt: timestamp('completed_at', { withTimezone: true }),
    ...timestamps,
  },
  (t) => [
    index('books_user_status_idx').on(t.userId, t.status),
    index('books_status_idx').on(t.status),
    index('books_created_at_idx').on(t.createdAt),
    check('books_spread_counts', sql`${t.processedSpreads} + ${t.failedSpreads} <= ${t.spreadCount}`),
  ],
);

export const spreadStatuses = ['pending', 'analyzing', 'analyzed', 'failed'] as const;

export const bookSpreads = pgTable(
  'book_spreads',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    bookId: uuid('book_id')
      .notNull()
      .references(() => books.id, { onDelete: 'cascade' }),
    index: integer('index').notNull(),
    firstPage: integer('first_page').notNull(),
    lastPage: integer('last_page').notNull(),
    text: text('text').notNull(),
    // Null until analysed; a failed spread keeps null and continues the previous scene.
    analysis: jsonb('analysis'),
    status: text('status', { enum: spreadStatuses }).notNull().default('pending'),
    // The claim of the job analysing it (a random id per claim, rollup/books.ts): set while
    // status is `analyzing`, and kept once `analyzed` (the claim that recorded the analysis, by
    // which a job whose completion threw after its COMMIT knows it went through); null
    // otherwise. A job writes its result only while the row is `analyzing` under its claim, so
    // a job whose run was timed out and started again changes nothing.
    claim: uuid('claim'),
    errorMessage: text('error_message'),
    attempts: integer('attempts').notNull().default(0),
    costUsd: money('cost_usd'),
    durationMs: integer('duration_ms'),
    ...timestamps,
  },
  (t) => [uniqueIndex('book_spreads_book_index_idx').on(t.bookId, t.index)],
);

export const scenes = pgTable(
  'scenes',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    bookId: uuid('book_id')
      .notNull()
      .references(() => books.id, { onDelete: 'cascade' }),
    index: integer('index').notNull(),
    firstSpread: integer('first_spread').notNull(),
    lastSpread: integer('last_spread').notNull(),
    firstPage: integer('first_page').notNull(),
    lastPage: integer('last_page').notNull(),
    description: text('description').notNull(),
    mood: text('mood').notNull(),
    ambience: jsonb('ambience').$type<string[]>().notNull(),
    prompt: text('prompt').notNull(),
    ...timestamps,
  },
  (t) => [uniqueIndex('scenes_book_index_idx').on(t.bookId, t.index)],
);

export const soundscapeStatuses = ['pending', 'generating', 'completed', 'failed'] as const;

export const soundscapes = pgTable(
  'soundscapes',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    // One soundscape per scene: the unique index makes a duplicated job harmless.
    sceneId: uuid('scene_id')
      .notNull()
      .references(() => scenes.id, { onDelete: 'cascade' }),
    bookId: uuid('book_id')
      .notNull()
      .references(() => books.id, { onDelete: 'cascade' }),
    userId: text('user_id').notNull(),
    status: text('status', { enum: soundscapeStatuses }).notNull().default('pending'),
    // The claim of the job generating it, set exactly while `generating` (as book_spreads.claim,
    // which an analysed spread keeps; a completed soundscape's file key names its claim).
    claim: uuid('claim'),
    provider: text('provider'),
    fileKey: text('file_key'),
    fileBytes: integer('file_bytes'),
    durationMs: integer('duration_ms'),
    costUsd: money('cost_usd'),
    errorMessage: text('error_message'),
    attempts: integer('attempts').notNull().default(0),
    completedAt: timestamp('completed_at', { withTimezone: true }),
    ...timestamps,
  },
  (t) => [uniqueIndex('soundscapes_scene_idx').on(t.sceneId), index('soundscapes_book_idx').on(t.bookId)],
);

/** One row per provider call: usage and cost, for cost sums and admin analytics. */
export const providerCalls = pgTable(
  'provider_calls',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: text('user_id').notNull(),
    batchId: uuid('batch_id'),
    bookId: uuid('book_id'),
    provider: text('provider').notNull(),
    kind: text('kind', { enum: ['speech', 'analysis', 'soundscape'] }).notNull(),
    units: doublePrecision('units').notNull(),
    unitType: text('unit_type', { enum: ['characters', 'tokens', 'seconds'] }).notNull(),
    costUsd: money('cost_usd'),
    latencyMs: integer('latency_ms').notNull(),
    // aborted: the call stopped by us (the job's claim was taken), not failed by the provider.
    outcome: text('outcome', { enum: ['ok', 'error', 'aborted'] }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('provider_calls_user_created_idx').on(t.userId, t.createdAt), index('provider_calls_created_idx').on(t.createdAt)],
);

export const webhookEndpoints = pgTable(
  'webhook_endpoints',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: text('user_id').notNull(),
    url: text('url').notNull(),
    events: jsonb('events').$type<string[]>().notNull(),
    secret: text('secret').notNull(),
    ...timestamps,
  },
  (t) => [index('webhook_endpoints_user_idx').on(t.userId)],
);

/** One delivery attempt as GET /v1/webhooks/:id/deliveries shows it. */
export interface WebhookAttempt {
  attempt: number;
  at: string;
  status_code: number | null;
  latency_ms: number;
  error: string | null;
}

export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    endpointId: uuid('endpoint_id')
      .notNull()
      .references(() => webhookEndpoints.id, { onDelete: 'cascade' }),
    // The same event id on every attempt, so receivers can deduplicate.
    eventId: text('event_id').notNull(),
    eventType: text('event_type').notNull(),
    payload: jsonb('payload').notNull(),
    status: text('status', { enum: ['pending', 'delivered', 'failed'] }).notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    lastStatusCode: integer('last_status_code'),
    lastLatencyMs: integer('last_latency_ms'),
    lastError: text('last_error'),
    // One entry per attempt, oldest first: the last_* columns hold only the newest.
    attemptLog: jsonb('attempt_log').$type<WebhookAttempt[]>().notNull().default(sql`'[]'::jsonb`),
    deliveredAt: timestamp('delivered_at', { withTimezone: true }),
    ...timestamps,
  },
  (t) => [
    uniqueIndex('webhook_deliveries_endpoint_event_idx').on(t.endpointId, t.eventId),
    // The reconciler's look for deliveries recorded but never queued: only pending ones.
    index('webhook_deliveries_pending_idx').on(t.updatedAt).where(sql`${t.status} = 'pending'`),
  ],
);

// Secrets the service makes for itself and every API replica must share: today the key that
// signs the API's own short-lived tokens (EventSource tokens, playback URLs) when
// AUTH_JWT_SECRET is not set. Kept here so a token one replica signs, another accepts, and a
// restart does not void the URLs already handed out.
export const serviceSecrets = pgTable('service_secrets', {
  name: text('name').primaryKey(),
  value: text('value').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});
