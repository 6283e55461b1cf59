import { randomUUID } from 'node:crypto';
import { extname, join } from 'node:path';
import { describeError, MixingError, ValidationError } from '@soundqueue/shared/errors';
import { parsePayload, type Payload } from '@soundqueue/shared/queues';
import { eq } from 'drizzle-orm';
import { audioTracks } from '@soundqueue/shared/db/schema';
import { detachRendition, finishTrack, markMixing, trackWithRun, unchangedBecause, whyUnchanged } from '@soundqueue/shared/rollup/tracks';
import { storageKeys } from '@soundqueue/shared/storage/index';
import { getVariant } from '@soundqueue/shared/variants';
import type { WorkerContext } from '../context';
import { dropIfUnrecorded, removeUnrecorded } from '../unrecorded-files';
import { handleJobFailure, type JobRun } from '../job-failure';
import { removeScratchFiles } from '../scratch-files';
import { dropMissingRendition } from '../speech/rendition';
import { voiceTrack } from './audio-tts';

/** One track's mix: its voice over the variant's bed, loudness-normalised, then stored. */
export async function processAudioMix(ctx: WorkerContext, run: JobRun): Promise<{ durationMs: number } | { skipped: string }> {
  const payload = parsePayload('audio-mix', run.job.data);
  const { trackId, run: batchRun } = payload;
  let mixing = await markMixing(ctx.db, trackId, batchRun);
  if (!mixing) {
    // Not waiting to be mixed: finished or cancelled already (a repeated delivery), gone, of
    // a run the batch has moved on from, or without a voice.
    const track = await trackWithRun(ctx.db, trackId);
    const stale = batchRun !== undefined && batchRun !== track?.batchRun;
    if (!track || stale || track.renditionKey || !['pending', 'generating'].includes(track.status)) return { skipped: whyUnchanged(track, batchRun) };
    // The speech job ended without a voice and without recording a failure on the track: its
    // worker was lost past the stall limit, or the job was removed. Nothing is lost: the
    // voice is made here, by the same single-flight step, with this job's attempts.
    const failures = Object.values(await run.job.getIgnoredChildrenFailures());
    ctx.logger.warn({ trackId, reason: failures[0] ?? 'no failure recorded' }, 'speech job ended without a voice; voicing the track in its mix job');
    const voiced = await voiceTrack(ctx, { ...run, pausesOn429: ctx.queues['audio-tts'] }, trackId, batchRun);
    if ('skipped' in voiced) return voiced;
    mixing = await markMixing(ctx.db, trackId, batchRun);
    if (!mixing) return { skipped: 'track is no longer waiting to be mixed' };
  }
  await ctx.publish(mixing.events);
  // A voice whose stored file is missing is made again once per attempt; a second miss, right
  // after it was stored, is a storage fault and fails like any other error.
  for (let revoiced = false; ; revoiced = true) {
    const outcome = await mixVoice(ctx, run, payload, mixing, { recoverMissingVoice: !revoiced });
    if (!('voiceMissing' in outcome)) return outcome;
    const again = await revoiceTrack(ctx, run, payload, outcome.voiceMissing);
    if ('skipped' in again) return again;
    mixing = again;
  }
}

type Mixing = NonNullable<Awaited<ReturnType<typeof markMixing>>>;

/**
 * Mixes the track's voice and stores the result, or, with `recoverMissingVoice`, reports a
 * voice that cannot be read because it is gone: a rendition row without its stored file, or
 * a rendition row another job dropped for that reason (see revoiceTrack).
 */
async function mixVoice(
  ctx: WorkerContext,
  run: JobRun,
  { batchId, run: batchRun }: Payload<'audio-mix'>,
  { track, rendition }: Mixing,
  { recoverMissingVoice }: { recoverMissingVoice: boolean },
): Promise<{ durationMs: number } | { skipped: string } | { voiceMissing: { keyHash: string; rendition: Mixing['rendition'] } }> {
  const trackId = track.id;
  const voiceMissing = { voiceMissing: { keyHash: track.renditionKey!, rendition } };
  const scratch = join(ctx.scratchDir, randomUUID());
  // The scratch files this attempt made and has not handed over to storage.
  const scratchFiles = new Set<string>();
  try {
    const variant = getVariant(track.variantId);
    if (!variant) throw new ValidationError(`unknown variant "${track.variantId}"`);
    if (!rendition?.storageKey || rendition.status !== 'ready') {
      if (recoverMissingVoice) return voiceMissing;
      throw new MixingError('the voice rendition is not available yet');
    }
    // With local storage ffmpeg reads the stored voice itself; other drivers download it.
    const voiceScratch = `${scratch}-voice${extname(rendition.storageKey)}`;
    const voicePath = await ctx.storage.localFile(rendition.storageKey, voiceScratch).catch((error: unknown) => {
      if (recoverMissingVoice && (error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    });
    if (voicePath === null) return voiceMissing;
    if (voicePath === voiceScratch) scratchFiles.add(voiceScratch);
    const outPath = `${scratch}-mix.mp3`;
    scratchFiles.add(outPath);
    const mixed = await ctx.mixer.mixTrack({ voicePath, variant, outPath, voiceLoudness: rendition.loudnessLufs ?? undefined, voiceDurationMs: rendition.durationMs ?? undefined });
    // A key of this attempt's own: see storageKeys.track.
    const key = storageKeys.track(batchId, trackId, randomUUID());
    const stored = await ctx.storage.moveFile(key, outPath, 'audio/mpeg');
    scratchFiles.delete(outPath);
    const file = { key, what: 'mix', context: { batchId, trackId } };
    const done = await finishTrack(ctx.db, trackId, { status: 'completed', mixedFileKey: key, mixedBytes: stored.size, durationMs: mixed.durationMs }, { run: batchRun }).catch(
      async (error: unknown) => {
        await dropIfUnrecorded(ctx, file, async () => (await ctx.db.select({ key: audioTracks.mixedFileKey }).from(audioTracks).where(eq(audioTracks.id, trackId)))[0]?.key, error);
        throw error;
      },
    );
    if (!done.changed) {
      // Refused: the track was finished meanwhile (by a second delivery of this job, or by
      // the current run's job after this job's run was ended), and its row describes another
      // file. This one is nobody's.
      await removeUnrecorded(ctx, file);
      return { skipped: await unchangedBecause(ctx.db, trackId, batchRun) };
    }
    await ctx.publish(done.events);
    return { durationMs: mixed.durationMs };
  } catch (error) {
    return await handleJobFailure(run, error, async (final) => {
      const { errorType, message } = describeError(final, 'MixingError');
      const done = await finishTrack(ctx.db, trackId, { status: 'failed', errorType, errorMessage: `Mixing: ${message}` }, { run: batchRun });
      await ctx.publish(done.events);
    });
  } finally {
    await removeScratchFiles(...scratchFiles);
  }
}

/**
 * A rendition marked ready whose stored file is gone would fail this track on every attempt
 * and every retry of the batch. Instead: drop the rendition row (only as read, so a
 * re-synthesis another track's job has finished meanwhile is kept), take the voice off the
 * track, and voice it again through the single-flight step, as for a lost speech job: however
 * many tracks find the file missing at once, one of them synthesizes and the rest wait for it.
 * Outside mixVoice's failure handling, because voiceTrack handles its own (a 429 pauses the
 * speech queue; a last attempt fails the track with the speech error).
 */
async function revoiceTrack(
  ctx: WorkerContext,
  run: JobRun,
  { trackId, run: batchRun }: Payload<'audio-mix'>,
  missing: { keyHash: string; rendition: Mixing['rendition'] },
): Promise<Mixing | { skipped: string }> {
  if (missing.rendition && (await dropMissingRendition(ctx, missing.rendition))) {
    ctx.logger.warn({ trackId, renditionKey: missing.keyHash, storageKey: missing.rendition.storageKey }, 'voice rendition file is missing; synthesizing it again');
  }
  const detached = await detachRendition(ctx.db, trackId, missing.keyHash, batchRun);
  if (!detached.changed) return { skipped: 'track is no longer being mixed with that voice' };
  await ctx.publish(detached.events);
  const voiced = await voiceTrack(ctx, { ...run, pausesOn429: ctx.queues['audio-tts'] }, trackId, batchRun);
  if ('skipped' in voiced) return voiced;
  const mixing = await markMixing(ctx.db, trackId, batchRun);
  if (!mixing) return { skipped: 'track is no longer waiting to be mixed' };
  await ctx.publish(mixing.events);
  return mixing;
}
