import { eq } from 'drizzle-orm';
import { audioGenerationBatches } from '@soundqueue/shared/db/schema';
import { parsePayload, QUEUE } from '@soundqueue/shared/queues';
import { finaliseBatch } from '@soundqueue/shared/rollup/tracks';
import type { WorkerContext } from '../context';
import type { JobRun } from '../job-failure';
import { removeUnnamedTrackFiles } from '../unrecorded-files';

/** Runs once every track of a run has ended; gives the batch its terminal status. */
export async function processAudioBatch(ctx: WorkerContext, run: JobRun): Promise<{ status: string | null }> {
  const { batchId, run: batchRun } = parsePayload('audio-batch', run.job.data);
  // A root of an older run (the reconciler re-enqueued the work as a new run, or the user
  // retried) must not finalise: the new run's jobs may still be working on the tracks. This
  // read saves the work below; finaliseBatch checks the run again under the batch's lock.
  const [batch] = await ctx.db.select({ run: audioGenerationBatches.run }).from(audioGenerationBatches).where(eq(audioGenerationBatches.id, batchId));
  if (!batch || batch.run !== batchRun) return { status: null };
  // A child job that failed without recording why (lost past the stall limit) left its
  // reason here; it becomes the track's message.
  const failures = await run.job.getIgnoredChildrenFailures();
  const reasonByTrack = new Map<string, string>();
  for (const [key, reason] of Object.entries(failures)) {
    const match = new RegExp(`:${QUEUE.audioMix}:mix\\.([0-9a-f-]{36})\\.r\\d+$`).exec(key);
    if (match?.[1]) reasonByTrack.set(match[1], reason);
  }
  const result = await finaliseBatch(ctx.db, batchId, {
    run: batchRun,
    // A job the queue lost says nothing about speech or mixing: whichever step was pending,
    // the cause is the queue's (as for an enqueue Redis refused), and a retry makes it good.
    errorType: 'QueueError',
    reason: (trackId) => `The track's job was lost before it finished (${reasonByTrack.get(trackId) ?? 'no job result'}); retry the batch's failed tracks.`,
  });
  await ctx.publish(result.events);
  // Whoever ended the run (this root, or a cancel with nothing left running), its end is
  // when the files no track names can go: a worker that died between storing a mix and
  // recording it left one. Checked against the batch's run and status after the listing.
  await removeUnnamedTrackFiles(ctx, batchId, batchRun);
  return { status: result.status };
}
