import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { books, scenes, soundscapes } from '@soundqueue/shared/db/schema';
import { describeError, SoundscapeGenerationError } from '@soundqueue/shared/errors';
import { parsePayload } from '@soundqueue/shared/queues';
import {
  claimSoundscape,
  completeSoundscape,
  completedSoundscapeEvents,
  failSoundscape,
  holdsSoundscapeClaim,
  releaseSoundscapeClaim,
  removeVoidedFiles,
  renewSoundscapeClaim,
} from '@soundqueue/shared/rollup/books';
import { storageKeys } from '@soundqueue/shared/storage/index';
import type { ProgressEvent } from '@soundqueue/shared/events';
import type { WorkerContext } from '../context';
import { dropIfUnrecorded, removeUnrecorded } from '../unrecorded-files';
import { handleJobFailure, type JobRun } from '../job-failure';
import { recordedCall } from '../provider-calls';
import { claimLeaseMs, keepClaim, waitForClaim } from '../claims';
import { removeScratchFiles } from '../scratch-files';
import { writeCheckedAudio } from '../audio/checked-audio';
import { FfmpegError, probeAudio, runFfmpeg, type AudioInfo } from '../ffmpeg';

/** One scene's ambient soundscape, checked with ffprobe before it counts. */
export async function processSoundscape(ctx: WorkerContext, run: JobRun): Promise<{ durationMs: number } | { skipped: string }> {
  const { bookId, soundscapeId, run: jobRun } = parsePayload('soundscape', run.job.data);
  const [row] = await ctx.db
    .select({ soundscape: soundscapes, scene: scenes, book: { status: books.status, run: books.run } })
    .from(soundscapes)
    .innerJoin(scenes, eq(scenes.id, soundscapes.sceneId))
    .innerJoin(books, eq(books.id, soundscapes.bookId))
    .where(eq(soundscapes.id, soundscapeId));
  if (!row) return { skipped: 'soundscape no longer exists' };
  const { soundscape, scene, book } = row;
  // As for spread analyses: a job of a book no longer processing, or of an earlier run (a
  // root of that run that segmented just before a restart), leaves the soundscape to the
  // current run's own job, which its segment step gives one if it still needs it.
  if (book.status !== 'processing') return { skipped: `book is ${book.status}` };
  if (book.run !== jobRun) return { skipped: `job of run ${jobRun}, the book is on run ${book.run}` };
  // Another job generating it (an earlier run's, whose worker lives on) is waited for.
  const leaseMs = claimLeaseMs(ctx);
  const claimed = await waitForClaim(run, 'generating this soundscape', leaseMs, () => claimSoundscape(ctx.db, bookId, soundscapeId, jobRun, leaseMs));
  if (claimed === 'superseded') return { skipped: `job of run ${jobRun}, which the book is no longer processing` };
  if (typeof claimed === 'string') return { skipped: claimed === 'gone' ? 'soundscape no longer exists' : `soundscape is ${claimed}` };
  const { claim } = claimed;
  // A claim taken over from a lapsed one: what that one stored is nobody's (its holder died
  // after storing it, or could not tell whether its completion went through: dropIfUnrecorded).
  await removeVoidedFiles(ctx.storage, ctx.logger, claimed.voidedFiles);
  // Renewed while the job works; a claim found gone stops the provider call (keepClaim).
  const kept = keepClaim(leaseMs, () => renewSoundscapeClaim(ctx.db, soundscapeId, claim));
  const provider = ctx.providers.soundscape;
  const tmp = join(ctx.scratchDir, `${soundscapeId}.${randomUUID()}`);
  // The scratch file of the provider's audio until storage takes it over.
  let scratchFile: string | undefined;
  try {
    const result = await recordedCall(
      ctx.db,
      { userId: soundscape.userId, bookId, provider: provider.name, kind: 'soundscape', unitType: 'seconds' },
      () => provider.generate({ prompt: scene.prompt, ambience: scene.ambience, mood: scene.mood, durationSeconds: ctx.config.SOUNDSCAPE_SECONDS }, kept.lost),
      (r) => ({ units: r.usage.seconds, costUsd: r.costUsd }),
      kept.lost,
    );
    const answered = `${tmp}.${result.format}`;
    scratchFile = answered;
    let probe = await writeCheckedAudio(answered, result.audio, (message, cause) => new SoundscapeGenerationError(`The soundscape provider ${message}`, { cause }));
    let path = answered;
    if (result.format !== 'mp3') {
      path = `${tmp}.mp3`;
      scratchFile = path;
      try {
        probe = await encodeMp3(answered, path);
      } finally {
        await removeScratchFiles(answered);
      }
    }
    const key = storageKeys.soundscape(bookId, soundscapeId, claim);
    const stored = await ctx.storage.moveFile(key, path, 'audio/mpeg');
    scratchFile = undefined;
    let events: ProgressEvent[] | null;
    try {
      events = await completeSoundscape(ctx.db, soundscapeId, claim, { fileKey: key, fileBytes: stored.size, durationMs: probe.durationMs, costUsd: result.costUsd, provider: provider.name });
    } catch (error) {
      // Committed all the same (its connection lost once the COMMIT was sent): the job is done,
      // and what the completion would have published is published from the rows.
      const recorded = await completedSoundscapeEvents(ctx.db, soundscapeId, key).catch(() => null);
      if (recorded) {
        ctx.logger.warn({ bookId, soundscapeId, run: jobRun, fileKey: key, err: error }, 'a soundscape completion failed but was recorded; the job completes');
        await ctx.publish(recorded);
        return { durationMs: probe.durationMs };
      }
      // One kept because the row could not be read is removed later if the completion did not
      // go through: the claim it was stored under is then still on the row, and whatever voids
      // that claim (a retry taking it over once it lapses, the run's end) removes its file
      // (voidedClaimFile in rollup/books.ts).
      const file = { key, what: 'soundscape', context: { bookId, soundscapeId, run: jobRun } };
      await dropIfUnrecorded(ctx, file, async () => (await ctx.db.select({ fileKey: soundscapes.fileKey }).from(soundscapes).where(eq(soundscapes.id, soundscapeId)))[0]?.fileKey, error);
      throw error;
    }
    if (events === null) return await dropUnrecorded(ctx, { bookId, soundscapeId, run: jobRun }, key);
    await ctx.publish(events);
    return { durationMs: probe.durationMs };
  } catch (error) {
    kept.stop();
    if (!(await holdsSoundscapeClaim(ctx.db, soundscapeId, claim))) return lostClaim(ctx, { bookId, soundscapeId, run: jobRun });
    try {
      return await handleJobFailure(run, error, async (final) => {
        const { message } = describeError(final, 'SoundscapeGenerationError');
        const events = await failSoundscape(ctx.db, soundscapeId, claim, scene, {
          errorType: 'SoundscapeGenerationError',
          message,
          stack: final instanceof Error ? (final.stack ?? null) : null,
          attempt: run.job.attemptsMade + 1,
        });
        if (events) await ctx.publish(events);
      });
    } finally {
      // Whatever happens next (a retry, a 429 pause) this attempt no longer holds the
      // soundscape. Released after the final failure is recorded, not before: that write is
      // conditional on the claim too. (After it, nothing is left to release.)
      await releaseSoundscapeClaim(ctx.db, soundscapeId, claim);
    }
  } finally {
    kept.stop();
    if (scratchFile) await removeScratchFiles(scratchFile);
  }
}

/**
 * A provider's WAV (a Replicate model may ignore output_format) as the MP3 a soundscape is
 * stored and served as (its key ends in .mp3 and it goes out as audio/mpeg): stored as it
 * came, a WAV was served under an MP3's name and type. 44.1 kHz stereo, as the local
 * synthesizer makes; the duration recorded is the MP3's.
 */
async function encodeMp3(wavPath: string, mp3Path: string): Promise<AudioInfo> {
  try {
    await runFfmpeg(['-v', 'error', '-nostats', '-i', wavPath, '-ar', '44100', '-ac', '2', '-c:a', 'libmp3lame', '-q:a', '4', '-y', mp3Path]);
    // Decoded, not read from the header: the header's estimate was 30 ms long on 3 s.
    return await probeAudio(mp3Path);
  } catch (error) {
    const detail = error instanceof FfmpegError ? `${error.message}\n${error.stderrTail}` : String(error);
    throw new SoundscapeGenerationError(`The soundscape provider's WAV could not be encoded as MP3: ${detail}`, { cause: error });
  }
}

type SoundscapeJob = { bookId: string; soundscapeId: string; run: number };

/**
 * A claim taken from this job: its run was stopped (the reconciler's timeout) and the book
 * started again, whose own job makes the soundscape; or its claim lapsed and another job took
 * it over. Nothing is left to record or retry.
 */
function lostClaim(ctx: WorkerContext, job: SoundscapeJob): { skipped: string } {
  ctx.logger.info(job, 'soundscape job no longer holds its claim; ended without recording its result');
  return { skipped: `job of run ${job.run} no longer holds the soundscape: its run was stopped, or another job took over its lapsed claim` };
}

/**
 * After a completion that changed nothing: the file just stored, under this job's own claim's
 * key, is nobody's (no row records it, no later job writes it), so it is removed. Either the
 * soundscape's row is gone (running generation again replaced its scene while this job
 * generated it) or this job's claim is (lostClaim).
 */
async function dropUnrecorded(ctx: WorkerContext, job: SoundscapeJob, key: string): Promise<{ skipped: string }> {
  await removeUnrecorded(ctx, { key, what: 'soundscape', context: job });
  const [row] = await ctx.db.select({ id: soundscapes.id }).from(soundscapes).where(eq(soundscapes.id, job.soundscapeId));
  return row ? lostClaim(ctx, job) : { skipped: 'soundscape replaced while it was generated' };
}
