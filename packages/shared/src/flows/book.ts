import type { FlowJob } from 'bullmq';
import { jobId, jobOptions, QUEUE, type JobTuning } from '../queues';

/**
 * The book flow's first stage: `book` (root) ← one `book-analyze` per spread, all in
 * parallel. The root is a step job: once the analyses have ended it segments scenes, adds
 * one `soundscape` child per new scene to itself and waits for them (moveToWaitingChildren),
 * then finalises. Children ignore their own failure so the root always runs.
 */
export function buildBookFlow(bookId: string, run: number, spreadIndexes: number[], tuning: JobTuning): FlowJob {
  return {
    name: 'process-book',
    queueName: QUEUE.book,
    data: { bookId, run, step: 'segment' },
    opts: { ...jobOptions(QUEUE.book, tuning), jobId: jobId.book(bookId, run) },
    children: spreadIndexes.map((spreadIndex) => ({
      name: 'analyze-spread',
      queueName: QUEUE.bookAnalyze,
      data: { bookId, spreadIndex, run },
      opts: {
        ...jobOptions(QUEUE.bookAnalyze, tuning),
        jobId: jobId.bookAnalyze(bookId, spreadIndex, run),
        ignoreDependencyOnFailure: true,
      },
    })),
  };
}
