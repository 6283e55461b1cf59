import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { books, scenes, soundscapes } from '@soundqueue/shared/db/schema';
import { describeError, SoundscapeGenerationError } from '@soundqueue/shared/errors';
import { parsePayload } from '@soundqueue/shared/queues';
import { claimSoundscape, completeSoundscape, failSoundscape, releaseSoundscapeClaim, renewSoundscapeClaim } from '@soundqueue/shared/rollup/books';
import { storageKeys } from '@soundqueue/shared/storage/index';
import type { WorkerContext } from '../context';
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
  const claim = await waitForClaim(run, 'generating this soundscape', leaseMs, () => claimSoundscape(ctx.db, soundscapeId, leaseMs));
  if (claim !== 'claimed') return { skipped: claim === 'gone' ? 'soundscape no longer exists' : `soundscape is ${claim}` };
  const stopRenewing = keepClaim(leaseMs, () => renewSoundscapeClaim(ctx.db, soundscapeId));
  const provider = ctx.providers.soundscape;
  const tmp = join(ctx.scratchDir, `${soundscapeId}.${randomUUID()}`);
  // The scratch file of the provider's audio until storage takes it over.
  let scratchFile: string | undefined;
  try {
    const result = await recordedCall(
      ctx.db,
      { userId: soundscape.userId, bookId, provider: provider.name, kind: 'soundscape', unitType: 'seconds' },
      () => provider.generate({ prompt: scene.prompt, ambience: scene.ambience, mood: scene.mood, durationSeconds: ctx.config.SOUNDSCAPE_SECONDS }),
      (r) => ({ units: r.usage.seconds, costUsd: r.costUsd }),
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
    const key = storageKeys.soundscape(bookId, soundscapeId);
    const stored = await ctx.storage.moveFile(key, path, 'audio/mpeg');
    scratchFile = undefined;
    const events = await completeSoundscape(ctx.db, soundscapeId, { fileKey: key, fileBytes: stored.size, durationMs: probe.durationMs, costUsd: result.costUsd, provider: provider.name });
    if (events.length === 0) return await dropIfReplaced(ctx, soundscapeId, key, probe.durationMs);
    await ctx.publish(events);
    return { durationMs: probe.durationMs };
  } catch (error) {
    stopRenewing();
    // Whatever happens next (a retry, a 429 pause, the final failure below) this attempt no
    // longer holds the soundscape.
    await releaseSoundscapeClaim(ctx.db, soundscapeId);
    return await handleJobFailure(run, error, async (final) => {
      const { message } = describeError(final, 'SoundscapeGenerationError');
      await ctx.publish(
        await failSoundscape(ctx.db, soundscapeId, scene, {
          errorType: 'SoundscapeGenerationError',
          message,
          stack: final instanceof Error ? (final.stack ?? null) : null,
          attempt: run.job.attemptsMade + 1,
        }),
      );
    });
  } finally {
    stopRenewing();
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

/**
 * After a completion that changed nothing. If the soundscape's row is gone (running generation
 * again replaced its scene while this job generated it), the file just stored is nobody's: its
 * key holds the id of a row that no longer exists, so no later job writes or serves it.
 * Otherwise the row was completed or failed meanwhile and is left as it is: a completed one
 * refers to this same key, and a failed one may be given another go that writes it again.
 */
async function dropIfReplaced(ctx: WorkerContext, soundscapeId: string, key: string, durationMs: number): Promise<{ durationMs: number } | { skipped: string }> {
  const [row] = await ctx.db.select({ id: soundscapes.id }).from(soundscapes).where(eq(soundscapes.id, soundscapeId));
  if (row) return { durationMs };
  await ctx.storage.delete(key).catch((error: unknown) => ctx.logger.warn({ err: error, fileKey: key }, "could not remove the file of a soundscape whose scene was replaced"));
  return { skipped: 'soundscape replaced while it was generated' };
}
