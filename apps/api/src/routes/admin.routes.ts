import { and, desc, gte, inArray, sql } from 'drizzle-orm';
import { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import { audioGenerationBatches, batchStatuses } from '@soundqueue/shared/db/schema';
import { batchView } from '../batches/batch.view';
import { listedBatch } from '../batches/batch-service';
import type { ApiContext } from '../context';
import { HttpError, validate } from '../http-errors';
import { pageLimit } from '../ids';

const requireAdmin: RequestHandler = (req, _res, next) => {
  if (req.principal?.role !== 'admin') return next(new HttpError(403, 'forbidden', 'admin role required'));
  next();
};

export const analyticsQuery = z.object({
  // A union's own message: zod reports a failed union as "Invalid input", not its members' messages.
  since: z
    .union([z.iso.datetime({ offset: true }), z.iso.date()], { error: 'must be an ISO 8601 date (2026-11-01) or date-time (2026-11-01T00:00:00Z)' })
    // An offset can carry a written year 9999 past the end of it (or 0001 before its start):
    // the answer's `since` would then need an extended year (+010000-…), which clients misread.
    .refine((value) => {
      const year = new Date(value).getUTCFullYear();
      return year >= 1 && year <= 9999;
    }, 'must fall within the years 0001 to 9999 (UTC)')
    // The figures run from `since` to now: a later one counts an empty period, and a 200 full
    // of zeros reads as "nothing happened" rather than as a mistyped date.
    .refine((value) => new Date(value).getTime() <= Date.now(), 'must not be later than now (the figures count from since until now)')
    .optional()
    .meta({ description: 'where the figures start: an ISO 8601 date or date-time from the year 0001 (UTC) up to now; 30 days ago when left out' }),
});

export const adminBatchesQuery = z.object({
  status: z.enum(['active', ...batchStatuses], { message: `must be one of active, ${batchStatuses.join(', ')}` }).default('active'),
  limit: pageLimit(500, 100),
});

const n = (v: unknown) => (v === null || v === undefined ? 0 : Number(v));

/** Operator views across every user: a JWT with role "admin", or the service token. */
export function adminRoutes(ctx: ApiContext): Router {
  const router = Router();
  router.use('/admin', requireAdmin);

  router.get('/admin/analytics', async (req, res) => {
    const query = validate(analyticsQuery, req.query, 'query');
    const since = query.since ? new Date(query.since) : new Date(Date.now() - 30 * 86_400_000);
    // Generation time runs from a batch's start (its run's, after a retry) to its end, for the
    // batches that started: one whose flow Redis refused, or that was cancelled before any
    // track started, generated nothing, and timing it from its creation pulled the average
    // and p95 toward the seconds such a batch takes to be recorded as failed or cancelled.
    const [batches] = (
      await ctx.db.execute<Record<string, unknown>>(sql`
        select count(*) filter (where status in ('completed', 'partial_success', 'failed', 'cancelled')) as finished,
               count(*) filter (where status = 'completed') as completed,
               count(*) filter (where status = 'partial_success') as partial_success,
               count(*) filter (where status = 'failed') as failed,
               count(*) filter (where status in ('pending', 'processing')) as active,
               sum(tracks_completed) as tracks_completed,
               sum(tracks_failed) as tracks_failed,
               avg(extract(epoch from completed_at - started_at)) filter (where completed_at is not null and started_at is not null) as avg_seconds,
               percentile_cont(0.95) within group (order by extract(epoch from completed_at - started_at)) filter (where completed_at is not null and started_at is not null) as p95_seconds
        from audio_generation_batches where created_at >= ${since}`)
    ).rows;
    const failures = (
      await ctx.db.execute<{ error_type: string | null; error_message: string | null; count: number }>(sql`
        select error_type, error_message, count(*)::int as count from audio_tracks
        where status = 'failed' and created_at >= ${since}
        group by error_type, error_message order by count desc, error_message limit 10`)
    ).rows;
    const [bookRow] = (
      await ctx.db.execute<Record<string, unknown>>(sql`
        select count(*) filter (where status = 'ready') as ready, count(*) filter (where status = 'failed') as failed,
               count(*) filter (where status = 'processing') as processing
        from books where created_at >= ${since}`)
    ).rows;
    // Days in UTC, as `since` is read: on a timestamptz date_trunc cuts days in the session's
    // time zone, and a database set to local time put the first hours after `since` in a day
    // before it.
    const costPerDay = (
      await ctx.db.execute<{ day: string; provider: string; cost: string }>(sql`
        select to_char(created_at at time zone 'UTC', 'YYYY-MM-DD') as day, provider, sum(cost_usd)::text as cost
        from provider_calls where created_at >= ${since} group by 1, 2 order by 1, 2`)
    ).rows;
    // Per outcome, so that calls we aborted (a job's claim taken) are not read as provider failures.
    const calls = (
      await ctx.db.execute<{ provider: string; kind: string; outcome: string; calls: number; cost: string }>(sql`
        select provider, kind, outcome, count(*)::int as calls, sum(cost_usd)::text as cost
        from provider_calls where created_at >= ${since} group by 1, 2, 3 order by 1, 2, 3`)
    ).rows;
    const finished = n(batches?.finished);
    const tracksDone = n(batches?.tracks_completed) + n(batches?.tracks_failed);
    res.json({
      since: since.toISOString(),
      batches: {
        finished,
        active: n(batches?.active),
        completed: n(batches?.completed),
        partial_success: n(batches?.partial_success),
        failed: n(batches?.failed),
        success_rate: finished === 0 ? null : n(batches?.completed) / finished,
        avg_generation_seconds: batches?.avg_seconds === null ? null : n(batches?.avg_seconds),
        p95_generation_seconds: batches?.p95_seconds === null ? null : n(batches?.p95_seconds),
      },
      tracks: {
        completed: n(batches?.tracks_completed),
        failed: n(batches?.tracks_failed),
        success_rate: tracksDone === 0 ? null : n(batches?.tracks_completed) / tracksDone,
      },
      top_failures: failures.map((f) => ({ error_type: f.error_type, message: f.error_message, count: f.count })),
      books: { ready: n(bookRow?.ready), failed: n(bookRow?.failed), processing: n(bookRow?.processing) },
      cost_per_day: costPerDay.map((c) => ({ day: c.day, provider: c.provider, cost_usd: Number(c.cost) })),
      provider_calls: calls.map((c) => ({ provider: c.provider, kind: c.kind, outcome: c.outcome, calls: c.calls, cost_usd: Number(c.cost) })),
    });
  });

  router.get('/admin/batches', async (req, res) => {
    const query = validate(adminBatchesQuery, req.query, 'query');
    const statuses = query.status === 'active' ? ['pending', 'processing'] : [query.status];
    const rows = await ctx.db
      .select(listedBatch)
      .from(audioGenerationBatches)
      .where(and(inArray(audioGenerationBatches.status, statuses as never[]), gte(audioGenerationBatches.createdAt, new Date(0))))
      .orderBy(desc(audioGenerationBatches.createdAt))
      .limit(query.limit);
    res.json({ batches: rows.map((b) => ({ user_id: b.userId, ...batchView(b) })) });
  });

  return router;
}
