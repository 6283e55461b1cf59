import type { QueueName } from '@soundqueue/shared/queues';
import type { WorkerContext } from './context';
import type { JobRun } from './job-failure';
import { processAudioBatch } from './processors/audio-batch';
import { processAudioMix } from './processors/audio-mix';
import { processAudioTts } from './processors/audio-tts';
import { processBook } from './processors/book';
import { processBookAnalyze } from './processors/book-analyze';
import { processMaintenance } from './processors/maintenance';
import { processSoundscape } from './processors/soundscape';
import { processWebhook } from './processors/webhook';

export type Handler = (ctx: WorkerContext, run: JobRun) => Promise<unknown>;

/** One processor per queue; a queue without one is a compile error. */
export const handlers: Record<QueueName, Handler> = {
  'audio-tts': processAudioTts,
  'audio-mix': processAudioMix,
  'audio-batch': processAudioBatch,
  'book-analyze': processBookAnalyze,
  soundscape: processSoundscape,
  book: processBook,
  webhooks: processWebhook,
  maintenance: processMaintenance,
};
