import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outcomes } from '@soundqueue/shared/metrics';
import { finaliseBook } from '@soundqueue/shared/rollup/books';
import { cancelBatch, finaliseBatch } from '@soundqueue/shared/rollup/tracks';
import { readJson, startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { postBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// soundqueue_outcomes_total{kind,status} counts the batches and books that reached a terminal
// status. It was raised inside the transaction that ends them, before its commit: a
// transaction that then failed (its webhook deliveries refused, its COMMIT lost) counted an
// end that never happened, and the retry that did end it counted it again. Here the
// deliveries of each end are refused once, then accepted: each end counts once.
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ WEBHOOK_ALLOW_PRIVATE: 'true' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

async function counted(kind: string, status: string): Promise<number> {
  const { values } = await outcomes.get();
  return values.find((v) => v.labels.kind === kind && v.labels.status === status)?.value ?? 0;
}

async function subscribe(user: string, events: string[]): Promise<void> {
  const res = await api.request('/v1/webhooks', { method: 'POST', json: { url: 'http://127.0.0.1:9/hook', events }, user });
  expect(res.status, JSON.stringify(await readJson(res.clone()))).toBe(201);
}

/** Runs `end` once while webhook deliveries are refused (it must fail), then once more. */
async function refusedOnceThen<T>(end: () => Promise<T>): Promise<T> {
  await queryRows(
    env.databaseUrl,
    `create function refuse_delivery() returns trigger language plpgsql as $$ begin raise exception 'deliveries refused'; end $$;
     create trigger refuse_delivery before insert on webhook_deliveries for each row execute function refuse_delivery()`,
  );
  try {
    await expect(end()).rejects.toThrow();
  } finally {
    await queryRows(env.databaseUrl, 'drop trigger refuse_delivery on webhook_deliveries; drop function refuse_delivery()');
  }
  return end();
}

describe('soundqueue_outcomes_total counts only ends that committed', () => {
  it("a batch's end by its root", async () => {
    await subscribe('root-user', ['batch.failed']);
    const created = await createBatch(api, { visionId: 'outcome', sections: sampleSections(1), variants: ['voice_only'], voice: 'alloy' }, { user: 'root-user' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    await queryRows(env.databaseUrl, `update audio_generation_batches set status = 'processing' where id = $1`, [batchId]);
    const before = await counted('batch', 'failed');
    const result = await refusedOnceThen(() => finaliseBatch(api.ctx.db, batchId, { run: 1, errorType: 'QueueError', reason: () => 'lost' }));
    expect(result.status).toBe('failed');
    expect(await counted('batch', 'failed')).toBe(before + 1);
  });

  it("a batch's end by a cancel", async () => {
    await subscribe('cancel-user', ['batch.cancelled']);
    const created = await createBatch(api, { visionId: 'outcome', sections: sampleSections(1), variants: ['voice_only'], voice: 'alloy' }, { user: 'cancel-user' });
    expect(created.status).toBe(201);
    const before = await counted('batch', 'cancelled');
    const result = await refusedOnceThen(() => cancelBatch(api.ctx.db, created.body.id as string, 'cancel-user'));
    expect(result.outcome).toBe('cancelling');
    expect(await counted('batch', 'cancelled')).toBe(before + 1);
  });

  it("a book's end", async () => {
    await subscribe('reader', ['book.ready']);
    const posted = await postBook(api, { title: 'Outcome', pages: ['a forest', 'the sea'] }, 'reader');
    expect(posted.status).toBe(202);
    const bookId = posted.body.bookId as string;
    await queryRows(env.databaseUrl, `update books set status = 'processing', processed_spreads = 1 where id = $1`, [bookId]);
    const before = await counted('book', 'ready');
    const result = await refusedOnceThen(() => finaliseBook(api.ctx.db, bookId, {}));
    expect(result.status).toBe('ready');
    expect(await counted('book', 'ready')).toBe(before + 1);
  });
});
