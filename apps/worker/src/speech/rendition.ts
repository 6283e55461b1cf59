import { createHash, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { and, eq, isNull, lt, or, sql } from 'drizzle-orm';
import { preparedFor } from '@soundqueue/shared/db/prepared';
import { voiceRenditions } from '@soundqueue/shared/db/schema';
import { SpeechGenerationError } from '@soundqueue/shared/errors';
import { storageKeys } from '@soundqueue/shared/storage/index';
import type { WorkerContext } from '../context';
import { dropIfUnrecorded, removeUnrecorded } from '../unrecorded-files';
import { InvalidAudioError } from '../ffmpeg';
import { claimLeaseMs } from '../claims';
import { recordedCall } from '../provider-calls';
import { removeScratchFiles } from '../scratch-files';
import type { SpeechRequest } from './types';

export type Rendition = typeof voiceRenditions.$inferSelect;

/** The cache key of a voice rendition: what changes the audio, and nothing else. */
export function renditionKey(provider: { name: string; usesInstructions: boolean }, request: SpeechRequest): string {
  return createHash('sha256')
    .update(JSON.stringify([provider.name, request.text, request.voice, request.model, provider.usesInstructions ? request.instructions : '']))
    .digest('hex');
}

// A claim is a lease its holder renews while it works (every third of the lease); one not
// renewed for a whole lease is presumed dead (its worker killed) and may be taken over. The
// lease is the worker lock duration (claimLeaseMs, shared with the book's claims), the time
// after which BullMQ too presumes a silent job stalled, so a killed worker's voice is free
// again by the time its job is retried (a fixed 3-minute lease held every track needing that
// voice for 3 minutes after a crash).

// Prepared: one claim per track (see db/prepared.ts). A new claim only: a row that exists
// (ready, or claimed) is left alone here, and a lapsed claim is taken over by takeOverStatement,
// which knows the claim it replaces.
const claimStatement = (ctx: WorkerContext) =>
  preparedFor(ctx.db, 'sq_claim_new_rendition', (db) =>
    db
      .insert(voiceRenditions)
      .values({
        keyHash: sql.placeholder('keyHash'),
        status: 'generating',
        claimToken: sql.placeholder('token'),
        claimedAt: sql.placeholder('now'),
        provider: sql.placeholder('provider'),
        voiceId: sql.placeholder('voice'),
        model: sql.placeholder('model'),
        characters: sql.placeholder('characters'),
      })
      .onConflictDoNothing({ target: voiceRenditions.keyHash })
      .returning()
      .prepare('sq_claim_new_rendition'),
  );

/**
 * Takes over a dead claim (not renewed for a whole lease), only if it is still the one read
 * (`lapsedToken`): so the caller knows exactly which claim it replaced, and whose file (keys
 * are per claim) no row will ever name. Rare (a worker lost mid-synthesis), so not prepared.
 */
async function takeOver(ctx: WorkerContext, keyHash: string, lapsedToken: string | null, token: string, now: Date): Promise<Rendition | undefined> {
  const [taken] = await ctx.db
    .update(voiceRenditions)
    .set({ claimToken: token, claimedAt: now, updatedAt: sql`now()` })
    .where(
      and(
        eq(voiceRenditions.keyHash, keyHash),
        eq(voiceRenditions.status, 'generating'),
        lapsedToken === null ? isNull(voiceRenditions.claimToken) : eq(voiceRenditions.claimToken, lapsedToken),
        or(lt(voiceRenditions.claimedAt, new Date(now.getTime() - claimLeaseMs(ctx))), isNull(voiceRenditions.claimedAt)),
      ),
    )
    .returning();
  return taken;
}

/**
 * The file a lapsed claim's holder may have stored before it died (or stalled: it records
 * nothing once its claim is taken, and removes what it stores after that itself), in either
 * format a provider answers in. No row names it: a claim that made its voice ready is no
 * longer on a generating row.
 */
async function removeLapsedClaimFiles(ctx: WorkerContext, keyHash: string, lapsedToken: string): Promise<void> {
  for (const format of ['mp3', 'wav'] as const) {
    await removeUnrecorded(ctx, { key: storageKeys.rendition(keyHash, lapsedToken, format), what: 'voice', context: { keyHash } });
  }
}

// Prepared, as the claim: one per new voice, so one per track of a first-time batch. Built
// each time, this update cost about a twentieth of a worker's CPU per track in benchmark 1.
const readyStatement = (ctx: WorkerContext) =>
  preparedFor(ctx.db, 'sq_rendition_ready', (db) =>
    db
      .update(voiceRenditions)
      .set({
        status: 'ready',
        storageKey: sql`${sql.placeholder('storageKey')}`,
        format: sql`${sql.placeholder('format')}`,
        durationMs: sql`${sql.placeholder('durationMs')}::integer`,
        loudnessLufs: sql`${sql.placeholder('loudnessLufs')}::double precision`,
        costUsd: sql`${sql.placeholder('costUsd')}::numeric`,
        claimToken: null,
        updatedAt: sql`now()`,
      })
      .where(and(eq(voiceRenditions.keyHash, sql.placeholder('keyHash')), eq(voiceRenditions.claimToken, sql.placeholder('token'))))
      .returning()
      .prepare('sq_rendition_ready'),
  );

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Returns the ready rendition for a request, synthesizing it only if nobody has: the first
 * caller inserts a claim row and synthesizes; concurrent callers with the same key (other
 * tracks, other batches, other worker processes) wait for the claim to turn ready. PostgreSQL
 * holds the claim, so single flight survives a Redis flush too.
 */
export async function obtainRendition(
  ctx: WorkerContext,
  request: SpeechRequest,
  owner: { userId: string; batchId: string },
  signal?: AbortSignal,
): Promise<{ rendition: Rendition; paidUsd: number }> {
  const provider = ctx.providers.speech;
  const keyHash = renditionKey(provider, request);
  let waitMs = 100;
  for (;;) {
    signal?.throwIfAborted();
    const token = randomUUID();
    const now = new Date();
    const [claimed] = await claimStatement(ctx).execute({
      keyHash,
      token,
      now,
      provider: provider.name,
      voice: request.voice,
      model: request.model,
      characters: request.text.length,
    });
    if (claimed) {
      const rendition = await synthesize(ctx, keyHash, token, request, owner, signal);
      return { rendition, paidUsd: rendition.costUsd };
    }
    const [current] = await ctx.db.select().from(voiceRenditions).where(eq(voiceRenditions.keyHash, keyHash));
    if (current?.status === 'ready') return { rendition: current, paidUsd: 0 };
    const deadBefore = now.getTime() - claimLeaseMs(ctx);
    if (current?.status === 'generating' && (current.claimedAt === null || current.claimedAt.getTime() < deadBefore)) {
      if (await takeOver(ctx, keyHash, current.claimToken, token, now)) {
        // Committed (one statement): the lapsed claim can record nothing any more.
        if (current.claimToken !== null) await removeLapsedClaimFiles(ctx, keyHash, current.claimToken);
        const rendition = await synthesize(ctx, keyHash, token, request, owner, signal);
        return { rendition, paidUsd: rendition.costUsd };
      }
      // Another job took it over first, or its holder renewed it: wait as for a live claim.
    }
    await sleep(waitMs);
    waitMs = Math.min(waitMs * 2, 2_000);
  }
}

/**
 * Forgets a ready rendition whose stored file is gone (storage drivers switched, a volume
 * lost, a lifecycle rule), so that the next obtainRendition synthesizes it again instead of
 * handing out the missing file for ever. Only the row as the caller read it is deleted: a
 * re-synthesis another job has finished since (its file in place again) is told apart by its
 * storage key (one per claim) and its updated_at.
 * Returns whether the row was deleted.
 */
export async function dropMissingRendition(ctx: WorkerContext, rendition: Rendition): Promise<boolean> {
  if (rendition.status !== 'ready' || !rendition.storageKey) return false;
  const dropped = await ctx.db
    .delete(voiceRenditions)
    .where(
      and(
        eq(voiceRenditions.keyHash, rendition.keyHash),
        eq(voiceRenditions.status, 'ready'),
        eq(voiceRenditions.storageKey, rendition.storageKey),
        // PostgreSQL keeps microseconds, a Date milliseconds (truncated when it is read).
        sql`date_trunc('milliseconds', ${voiceRenditions.updatedAt}) = ${rendition.updatedAt.toISOString()}::timestamptz`,
      ),
    )
    .returning({ keyHash: voiceRenditions.keyHash });
  return dropped.length > 0;
}

async function synthesize(
  ctx: WorkerContext,
  keyHash: string,
  token: string,
  request: SpeechRequest,
  owner: { userId: string; batchId: string },
  signal?: AbortSignal,
): Promise<Rendition> {
  const provider = ctx.providers.speech;
  const tmp = join(ctx.scratchDir, `${keyHash}.${randomUUID()}`);
  // The scratch file of the provider's audio until storage takes it over.
  let scratchFile: string | undefined;
  const renew = setInterval(() => {
    ctx.db
      .update(voiceRenditions)
      .set({ claimedAt: new Date() })
      .where(and(eq(voiceRenditions.keyHash, keyHash), eq(voiceRenditions.claimToken, token), eq(voiceRenditions.status, 'generating')))
      .catch(() => {});
  }, claimLeaseMs(ctx) / 3);
  try {
    const result = await recordedCall(
      ctx.db,
      { ...owner, provider: provider.name, kind: 'speech', unitType: 'characters' },
      () => provider.synthesize(request, signal),
      (r) => ({ units: r.usage.characters, costUsd: r.costUsd }),
    );
    const path = `${tmp}.${result.format}`;
    scratchFile = path;
    await writeFile(path, result.audio);
    // One decode checks the audio (damaged, cut short or empty audio is never stored) and
    // measures the loudness and duration every mix of this voice reuses.
    const measured = await ctx.mixer.measureVoice(path, { signal }).catch((error: unknown) => {
      if (!(error instanceof InvalidAudioError)) throw error;
      throw new SpeechGenerationError(`The speech provider returned audio that cannot be decoded: ${error.message}`, { cause: error });
    });
    // A key of this claim's own: see storageKeys.rendition.
    const storageKey = storageKeys.rendition(keyHash, token, result.format);
    await ctx.storage.moveFile(storageKey, path, result.format === 'mp3' ? 'audio/mpeg' : 'audio/wav');
    scratchFile = undefined;
    const file = { key: storageKey, what: 'voice', context: { keyHash } };
    const [ready] = await readyStatement(ctx)
      .execute({
        keyHash,
        token,
        storageKey,
        format: result.format,
        durationMs: measured.durationMs,
        loudnessLufs: measured.loudnessLufs,
        costUsd: result.costUsd,
      })
      .catch(async (error: unknown) => {
        await dropIfUnrecorded(ctx, file, async () => (await ctx.db.select({ key: voiceRenditions.storageKey }).from(voiceRenditions).where(eq(voiceRenditions.keyHash, keyHash)))[0]?.key, error);
        throw error;
      });
    if (ready) return ready;
    // Our claim was taken over (we were slower than the lease): the file just stored is
    // nobody's; use whatever is there.
    await removeUnrecorded(ctx, file);
    const [current] = await ctx.db.select().from(voiceRenditions).where(eq(voiceRenditions.keyHash, keyHash));
    if (current?.status === 'ready') return current;
    throw new SpeechGenerationError('lost the claim on this voice rendition to another worker; will retry');
  } catch (error) {
    // Release the claim so a waiting job can try at once instead of waiting out the lease.
    await ctx.db
      .delete(voiceRenditions)
      .where(and(eq(voiceRenditions.keyHash, keyHash), eq(voiceRenditions.claimToken, token), eq(voiceRenditions.status, 'generating')))
      .catch(() => {});
    throw error;
  } finally {
    clearInterval(renew);
    if (scratchFile) await removeScratchFiles(scratchFile);
  }
}
