import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkerContext, type WorkerContext } from '@soundqueue/worker';
import { jobId } from '@soundqueue/shared/queues';
import { reconcile } from '../../apps/worker/src/reconciler';
import { startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { postBook } from '../helpers/books';
import { createTestEnv, holdingRow, lockWaits, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// The reconciler reads the unfinished batches, asks Redis whether each one's root is alive,
// and re-enqueues the open tracks of one whose root is gone as a new run. Its root may end the
// batch in between (a root that has finished is not alive either): the run was then bumped on
// the finished batch, and a flow of its tracks as they were read added, all of whose jobs
// had nothing to do. The bump now happens only for a batch still unfinished; the same for books.
let env: TestEnv;
let api: TestApi;
let worker: WorkerContext;

beforeAll(async () => {
  // No workers: the flows the API enqueues are never run.
  env = await createTestEnv({ RECONCILE_GRACE_MS: '1' });
  api = await startTestApi(env.config);
  worker = await createWorkerContext(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

/** Runs `end` in a transaction holding `table`'s row `id` while the reconciler's pass waits for it; returns the pass's report. */
async function reconcileWhileEnding(table: string, id: string, end: (client: pg.Client) => Promise<void>) {
  const pass = await holdingRow(env.databaseUrl, table, id, async (holder) => {
    const running = reconcile(worker);
    running.catch(() => undefined);
    await waitFor(async () => (await lockWaits(env.databaseUrl)) > 0, { what: 'the reconciler to wait for the row' });
    await end(holder);
    return { running };
  });
  return await pass.running;
}

describe('the reconciler meeting the end of a batch or book', () => {
  it('does not start a new run of a batch its root ended after the reconciler read it', async () => {
    const created = await createBatch(api, { visionId: 'v', sections: sampleSections(2, 'Ended'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    // The root has run (so Redis no longer holds it as alive) and is ending the batch.
    await (await worker.queues['audio-batch'].getJob(jobId.audioBatch(batchId, 1)))!.remove();
    await queryRows(env.databaseUrl, `update audio_generation_batches set status = 'processing', started_at = now() where id = $1`, [batchId]);

    const report = await reconcileWhileEnding('audio_generation_batches', batchId, async (root) => {
      // The root fails the two tracks its jobs left (as lost) and ends the batch.
      await root.query(`update audio_tracks set status = 'failed', mix_status = 'skipped', error_type = 'QueueError', error_message = 'lost', completed_at = now() where batch_id = $1`, [batchId]);
      await root.query(`update audio_generation_batches set status = 'failed', tracks_failed = 2, tracks_pending = 0, completed_at = now() where id = $1`, [batchId]);
    });
    expect(report).toMatchObject({ batchesRequeued: [], errors: [] });
    const [batch] = await queryRows(env.databaseUrl, 'select status, run from audio_generation_batches where id = $1', [batchId]);
    expect(batch).toEqual({ status: 'failed', run: 1 });
    expect(await worker.queues['audio-batch'].getJob(jobId.audioBatch(batchId, 2))).toBeUndefined();
  });

  it('does not start a new run of a book its root ended after the reconciler read it', async () => {
    const posted = await postBook(api, { title: 'Ended', pages: ['a dark forest', 'the forest again'] });
    expect(posted.status).toBe(202);
    const bookId = posted.body.bookId as string;
    await (await worker.queues.book.getJob(jobId.book(bookId, 1)))!.remove();
    await queryRows(env.databaseUrl, `update books set status = 'processing', started_at = now() where id = $1`, [bookId]);

    const report = await reconcileWhileEnding('books', bookId, async (root) => {
      // The root fails the spread its job left and ends the book.
      await root.query(`update book_spreads set status = 'failed' where book_id = $1`, [bookId]);
      await root.query(`update books set status = 'failed', failed_spreads = 1, completed_at = now() where id = $1`, [bookId]);
    });
    expect(report).toMatchObject({ booksRequeued: [], errors: [] });
    const [book] = await queryRows(env.databaseUrl, 'select status, run from books where id = $1', [bookId]);
    expect(book).toEqual({ status: 'failed', run: 1 });
    expect(await worker.queues.book.getJob(jobId.book(bookId, 2))).toBeUndefined();
  });
});
