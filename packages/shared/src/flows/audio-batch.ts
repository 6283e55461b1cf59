import type { FlowJob } from 'bullmq';
import { jobId, jobOptions, QUEUE, type JobTuning } from '../queues';

/**
 * The audio batch flow: `audio-batch` (root) ← one `audio-mix` per track ← its `audio-tts`.
 * Every child ignores its own failure as a dependency (ignoreDependencyOnFailure), so a
 * failed track never leaves its parent waiting: the root always runs once every track has
 * ended, and decides the batch's status from the rows.
 */
export function buildAudioBatchFlow(batchId: string, run: number, trackIds: string[], tuning: JobTuning): FlowJob {
  return {
    name: 'finalise-batch',
    queueName: QUEUE.audioBatch,
    data: { batchId, run },
    opts: { ...jobOptions(QUEUE.audioBatch, tuning), jobId: jobId.audioBatch(batchId, run) },
    children: trackIds.map((trackId) => ({
      name: 'mix-track',
      queueName: QUEUE.audioMix,
      data: { batchId, trackId, run },
      opts: { ...jobOptions(QUEUE.audioMix, tuning), jobId: jobId.audioMix(trackId, run), ignoreDependencyOnFailure: true },
      children: [
        {
          name: 'speak-track',
          queueName: QUEUE.audioTts,
          data: { batchId, trackId, run },
          opts: { ...jobOptions(QUEUE.audioTts, tuning), jobId: jobId.audioTts(trackId, run), ignoreDependencyOnFailure: true },
        },
      ],
    })),
  };
}
