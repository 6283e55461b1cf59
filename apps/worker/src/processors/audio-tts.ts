import { eq } from 'drizzle-orm';
import { audioTracks } from '@soundqueue/shared/db/schema';
import { describeError, ValidationError } from '@soundqueue/shared/errors';
import { parsePayload } from '@soundqueue/shared/queues';
import { attachRendition, finishTrack, startTrack } from '@soundqueue/shared/rollup/tracks';
import { getVariant } from '@soundqueue/shared/variants';
import type { WorkerContext } from '../context';
import { handleJobFailure, type JobRun } from '../job-failure';
import { obtainRendition } from '../speech/rendition';

/** One track's voice: find or synthesize the rendition its text, voice and variant need. */
export async function processAudioTts(ctx: WorkerContext, run: JobRun): Promise<{ renditionKey: string } | { skipped: string }> {
  const { trackId } = parsePayload('audio-tts', run.job.data);
  return voiceTrack(ctx, run, trackId);
}

/**
 * The speech step for one track, on behalf of `run`'s job: the speech job's own, or the mix
 * job's when the speech job was lost without a voice (see processAudioMix). On the job's last
 * attempt a failure ends the track with the reason.
 */
export async function voiceTrack(ctx: WorkerContext, run: JobRun, trackId: string): Promise<{ renditionKey: string } | { skipped: string }> {
  // Cancelled, gone, or already finished by an earlier delivery of this job: nothing to do.
  const started = await startTrack(ctx.db, trackId);
  if (!started.started) {
    const [track] = await ctx.db.select({ status: audioTracks.status }).from(audioTracks).where(eq(audioTracks.id, trackId));
    return { skipped: track ? `track is ${track.status}` : 'track no longer exists' };
  }
  const { track, request } = started;
  await ctx.publish(started.events);
  try {
    const variant = getVariant(track.variantId);
    const section = request.section;
    if (!variant) throw new ValidationError(`unknown variant "${track.variantId}"`);
    if (!section) throw new ValidationError(`section ${track.sectionIndex} is missing from the batch`);
    const { rendition, paidUsd } = await obtainRendition(
      ctx,
      { text: section.text, voice: request.voiceId, model: request.model, instructions: variant.speechInstructions },
      { userId: request.userId, batchId: request.batchId },
    );
    await attachRendition(ctx.db, trackId, { keyHash: rendition.keyHash, storageKey: rendition.storageKey!, costUsd: paidUsd });
    return { renditionKey: rendition.keyHash };
  } catch (error) {
    return await handleJobFailure(run, error, async (final) => {
      const { errorType, message } = describeError(final, 'SpeechGenerationError');
      const done = await finishTrack(ctx.db, trackId, { status: 'failed', errorType, errorMessage: `Speech: ${message}` });
      await ctx.publish(done.events);
    });
  }
}
