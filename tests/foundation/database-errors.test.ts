import { randomUUID } from 'node:crypto';
import { Job } from 'bullmq';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb } from '@soundqueue/shared/db/client';
import { DatabaseError, describeError, toJobError } from '@soundqueue/shared/errors';
import { QUEUE } from '@soundqueue/shared/queues';
import { startTestWorker, type TestWorker } from '../helpers/app';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// A failed query says why it failed, not which SQL failed: drizzle's own message is
// "Failed query: <SQL>", with the reason only in its cause.

let env: TestEnv;
beforeAll(async () => {
  env = await createTestEnv();
});
afterAll(async () => {
  await env?.cleanup();
});

describe('database failures', () => {
  it('are described by their reason, as a retryable DatabaseError', async () => {
    const { db, close } = createDb(env.databaseUrl, { max: 1 });
    try {
      const error = await db.execute(sql`select * from no_such_table`).catch((e: unknown) => e);
      expect((error as Error).message).toMatch(/^Failed query: select \* from no_such_table/);
      expect(describeError(error, 'SpeechGenerationError')).toEqual({
        errorType: 'DatabaseError',
        message: 'a database query failed: relation "no_such_table" does not exist',
      });
      const jobError = toJobError(error);
      expect(jobError).toBeInstanceOf(DatabaseError);
      expect((jobError as DatabaseError).retryable).toBe(true);
      expect(jobError.cause).toBe(error);
    } finally {
      await close();
    }
  });

  it("give a job the reason as its failure, not the SQL", async () => {
    let worker: TestWorker | undefined;
    try {
      worker = await startTestWorker(env.config);
      // Every speech job's first query now fails.
      await queryRows(env.databaseUrl, 'alter table audio_tracks rename to audio_tracks_elsewhere');
      const id = randomUUID();
      const job = await worker.ctx.queues[QUEUE.audioTts].add('speak', { batchId: id, trackId: id }, { attempts: 1 });
      const failed = await waitFor(
        async () => {
          const current = await Job.fromId(worker!.ctx.queues[QUEUE.audioTts], job.id!);
          return current?.failedReason ? current : null;
        },
        { timeoutMs: 30_000, intervalMs: 100, what: 'the speech job to fail' },
      );
      expect(failed.failedReason).toBe('a database query failed: relation "audio_tracks" does not exist');
    } finally {
      await queryRows(env.databaseUrl, 'alter table if exists audio_tracks_elsewhere rename to audio_tracks');
      await worker?.close();
    }
  });
});
