import { describeError, ValidationError } from '@soundqueue/shared/errors';
import { parsePayload } from '@soundqueue/shared/queues';
import { attachRendition, finishTrack, startTrack, unchangedBecause } from '@soundqueue/shared/rollup/tracks';
import { getVariant } from '@soundqueue/shared/variants';
import type { WorkerContext } from '../context';
import { handleJobFailure, type JobRun } from '../job-failure';
import { obtainRendition } from '../speech/rendition';

/** One track's voice: find or synthesize the rendition its text, voice and variant need. */
export async function processAudioTts(ctx: WorkerContext, run: JobRun): Promise<{ renditionKey: string } | { skipped: string }> {
  const { trackId, run: batchRun } = parsePayload('audio-tts', run.job.data);
  return voiceTrack(ctx, run, trackId, batchRun);
}

/**
 * The speech step for one track, on behalf of `run`'s job: the speech job's own, or the mix
 * job's when the speech job was lost without a voice (see processAudioMix). On the job's last
 * attempt a failure ends the track with the reason. `batchRun` is the batch run the job
 * belongs to (undefined for a job queued before payloads carried it).
 */
export async function voiceTrack(
  ctx: WorkerContext,
  run: JobRun,
  trackId: string,
  batchRun: number | undefined,
): Promise<{ renditionKey: string } | { skipped: string }> {
  // Cancelled, gone, already finished by an earlier delivery of this job, or the batch has
  // moved on to a newer run whose jobs voice the track: nothing to do, and no provider call.
  const started = await startTrack(ctx.db, trackId, batchRun);
  if (!started.started) return { skipped: await unchangedBecause(ctx.db, trackId, batchRun) };
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
    const attached = await attachRendition(ctx.db, trackId, { keyHash: rendition.keyHash, storageKey: rendition.storageKey!, costUsd: paidUsd }, batchRun);
    // The track ended while its voice was made, or a newer run took it over: the voice stays
    // in the cache for whoever needs it, this job's work on the track is over.
    if (!attached) return { skipped: await unchangedBecause(ctx.db, trackId, batchRun) };
    return { renditionKey: rendition.keyHash };
  } catch (error) {
    return await handleJobFailure(run, error, async (final) => {
      const { errorType, message } = describeError(final, 'SpeechGenerationError');
      const done = await finishTrack(ctx.db, trackId, { status: 'failed', errorType, errorMessage: `Speech: ${message}` }, { run: batchRun });
      await ctx.publish(done.events);
    });
  }
}
