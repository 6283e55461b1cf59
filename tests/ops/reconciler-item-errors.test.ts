import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reconcile } from '../../apps/worker/src/reconciler';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections } from '../helpers/batches';
import { expectBookCountsMatchRows, postBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// One batch the reconciler cannot handle must not stop its pass. Before, the error of the
// first such item ended the pass: every batch, book and webhook delivery after it waited for
// a pass that got past it, which never came while the item stayed broken. The broken item
// here is a real PostgreSQL refusal: a trigger that rejects any update of its tracks.
let env: TestEnv;
let api: TestApi;
let worker: TestWorker;

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
  // Nothing processes the work below but the reconciler calls the test makes.
  await worker.running.close();
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

describe('the reconciler', () => {
  it('handles every other item when one cannot be handled, reports that one, and handles it once it can', async () => {
    const ids: string[] = [];
    for (const name of ['broken', 'fine']) {
      const created = await createBatch(api, { visionId: name, sections: sampleSections(2, name), variants: ['voice_only'], voice: 'alloy' });
      expect(created.status).toBe(201);
      ids.push(created.body.id as string);
    }
    const [broken, fine] = ids as [string, string];
    const book = await postBook(api, { title: 'Stuck', pages: ['one', 'two', 'three'] });
    expect(book.status).toBe(202);
    const bookId = book.body.bookId as string;
    // All three have been stuck for seven hours (STUCK_AFTER_MS is 6 hours).
    await queryRows(env.databaseUrl, `update audio_generation_batches set created_at = now() - interval '7 hours', updated_at = now() - interval '7 hours'`);
    await queryRows(env.databaseUrl, `update books set started_at = now() - interval '7 hours', updated_at = now() - interval '7 hours' where id = $1`, [bookId]);
    await queryRows(env.databaseUrl, `create function refuse_update() returns trigger language plpgsql as $$ begin raise exception 'this row refuses updates'; end $$`);
    await queryRows(env.databaseUrl, `create trigger refuse_update before update on audio_tracks for each row when (old.batch_id = '${broken}') execute function refuse_update()`);

    const report = await reconcile(worker.ctx);
    expect(report.errors).toEqual([{ kind: 'batch', id: broken, message: expect.stringMatching(/this row refuses updates/) }]);
    expect(report.batchesTimedOut).toEqual([fine]);
    expect(report.booksTimedOut).toEqual([bookId]);
    const statuses = async () => Object.fromEntries((await queryRows(env.databaseUrl, 'select id, status from audio_generation_batches')).map((r: any) => [r.id, r.status]));
    expect(await statuses()).toEqual({ [broken]: 'pending', [fine]: 'failed' });
    await expectCountersMatchRows(env.databaseUrl, broken);
    await expectCountersMatchRows(env.databaseUrl, fine);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);

    // Once the row takes updates again, the next pass handles it.
    await queryRows(env.databaseUrl, 'drop trigger refuse_update on audio_tracks');
    const again = await reconcile(worker.ctx);
    expect(again).toMatchObject({ errors: [], batchesTimedOut: [broken], booksTimedOut: [] });
    expect(await statuses()).toEqual({ [broken]: 'failed', [fine]: 'failed' });
    await expectCountersMatchRows(env.databaseUrl, broken);
  });
});
