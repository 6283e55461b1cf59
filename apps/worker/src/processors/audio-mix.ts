import { randomUUID } from 'node:crypto';
import { extname, join } from 'node:path';
import { eq } from 'drizzle-orm';
import { audioTracks } from '@soundqueue/shared/db/schema';
import { describeError, MixingError, ValidationError } from '@soundqueue/shared/errors';
import { parsePayload } from '@soundqueue/shared/queues';
import { finishTrack, markMixing } from '@soundqueue/shared/rollup/tracks';
import { storageKeys } from '@soundqueue/shared/storage/index';
import { getVariant } from '@soundqueue/shared/variants';
import type { WorkerContext } from '../context';
import { handleJobFailure, type JobRun } from '../job-failure';
import { removeScratchFiles } from '../scratch-files';
import { voiceTrack } from './audio-tts';

/** One track's mix: its voice over the variant's bed, loudness-normalised, then stored. */
export async function processAudioMix(ctx: WorkerContext, run: JobRun): Promise<{ durationMs: number } | { skipped: string }> {
  const { trackId, batchId } = parsePayload('audio-mix', run.job.data);
  let mixing = await markMixing(ctx.db, trackId);
  if (!mixing) {
    // Not waiting to be mixed: finished or cancelled already (a repeated delivery), gone, or
    // without a voice.
    const [track] = await ctx.db.select().from(audioTracks).where(eq(audioTracks.id, trackId));
    if (!track) return { skipped: 'track no longer exists' };
    if (track.renditionKey || !['pending', 'generating'].includes(track.status)) return { skipped: `track is ${track.status}` };
    // The speech job ended without a voice and without recording a failure on the track: its
    // worker was lost past the stall limit, or the job was removed. Nothing is lost: the
    // voice is made here, by the same single-flight step, with this job's attempts.
    const failures = Object.values(await run.job.getIgnoredChildrenFailures());
    ctx.logger.warn({ trackId, reason: failures[0] ?? 'no failure recorded' }, 'speech job ended without a voice; voicing the track in its mix job');
    const voiced = await voiceTrack(ctx, { ...run, pausesOn429: ctx.queues['audio-tts'] }, trackId);
    if ('skipped' in voiced) return voiced;
    mixing = await markMixing(ctx.db, trackId);
    if (!mixing) return { skipped: 'track is no longer waiting to be mixed' };
  }
  const { track, rendition } = mixing;
  await ctx.publish(mixing.events);
  const scratch = join(ctx.scratchDir, randomUUID());
  // The scratch files this attempt made and has not handed over to storage.
  const scratchFiles = new Set<string>();
  try {
    const variant = getVariant(track.variantId);
    if (!variant) throw new ValidationError(`unknown variant "${track.variantId}"`);
    if (!rendition?.storageKey || rendition.status !== 'ready') throw new MixingError('the voice rendition is not available yet');
    // With local storage ffmpeg reads the stored voice itself; other drivers download it.
    const voiceScratch = `${scratch}-voice${extname(rendition.storageKey)}`;
    const voicePath = await ctx.storage.localFile(rendition.storageKey, voiceScratch);
    if (voicePath === voiceScratch) scratchFiles.add(voiceScratch);
    const outPath = `${scratch}-mix.mp3`;
    scratchFiles.add(outPath);
    const mixed = await ctx.mixer.mixTrack({ voicePath, variant, outPath, voiceLoudness: rendition.loudnessLufs ?? undefined, voiceDurationMs: rendition.durationMs ?? undefined });
    const key = storageKeys.track(batchId, trackId);
    const stored = await ctx.storage.moveFile(key, outPath, 'audio/mpeg');
    scratchFiles.delete(outPath);
    const done = await finishTrack(ctx.db, trackId, { status: 'completed', mixedFileKey: key, mixedBytes: stored.size, durationMs: mixed.durationMs });
    await ctx.publish(done.events);
    return { durationMs: mixed.durationMs };
  } catch (error) {
    return await handleJobFailure(run, error, async (final) => {
      const { errorType, message } = describeError(final, 'MixingError');
      const done = await finishTrack(ctx.db, trackId, { status: 'failed', errorType, errorMessage: `Mixing: ${message}` });
      await ctx.publish(done.events);
    });
  } finally {
    await removeScratchFiles(...scratchFiles);
  }
}
