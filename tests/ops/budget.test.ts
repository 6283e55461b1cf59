import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { postBook, waitForBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { refusingSpeech } from '../helpers/providers';

// USER_MONTHLY_BUDGET_USD stopped new batches only: a user past the budget could still have
// failed tracks voiced again, and start books and their soundscapes again, all paid calls.

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;

beforeAll(async () => {
  env = await createTestEnv({ USER_MONTHLY_BUDGET_USD: '1', SOUNDSCAPE_SECONDS: '2' });
  api = await startTestApi(env.config);
  // Every track fails at once, so the batch has something to retry.
  worker = await startTestWorker(env.config, { providers: refusingSpeech(env.config) });
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

async function expectBudgetExhausted(res: Response) {
  expect(res.status).toBe(402);
  const body = await readJson(res);
  expect(body.error).toMatchObject({ code: 'budget_exhausted', details: { budgetUsd: 1, spentUsd: 1.5 } });
}

describe('the monthly budget', () => {
  it('stops retries, new books and book restarts too, once it is spent, writing nothing', async () => {
    const batch = await createBatch(api, { visionId: 'v', sections: sampleSections(2), variants: ['voice_only'], voice: 'alloy' }, { user: 'user-a' });
    expect(batch.status).toBe(201);
    const batchId = batch.body.batchId ?? batch.body.id;
    expect(await waitForTerminal(api, batchId)).toMatchObject({ status: 'failed' });
    const book = await postBook(api, { title: 'Forest', pages: ['a dark forest at night', 'the forest again'] }, 'user-a');
    expect(book.status).toBe(202);
    const bookId = book.body.bookId as string;
    expect(await waitForBook(api, bookId, 'user-a')).toMatchObject({ status: 'ready' });

    // This month's calls of user-a now cost more than the budget.
    await queryRows(
      env.databaseUrl,
      `insert into provider_calls (user_id, provider, kind, units, unit_type, cost_usd, latency_ms, outcome) values ('user-a', 'openai', 'speech', 100, 'characters', 1.5, 10, 'ok')`,
    );

    await expectBudgetExhausted(await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST', user: 'user-a' }));
    await expectBudgetExhausted(await api.request(`/v1/books/${bookId}/soundscapes`, { method: 'POST', user: 'user-a' }));
    await expectBudgetExhausted(await api.request('/v1/books', { method: 'POST', user: 'user-a', json: { title: 'Sea', pages: ['the stormy sea'] } }));
    await expectBudgetExhausted(await api.request('/v1/audio/batches', { method: 'POST', user: 'user-a', json: { visionId: 'w', sections: sampleSections(1), variants: ['voice_only'], voice: 'alloy' } }));

    // Nothing was written: the batch and the book are on their first run, with no new book.
    expect(await queryRows(env.databaseUrl, `select status, run from audio_generation_batches where user_id = 'user-a'`)).toEqual([{ status: 'failed', run: 1 }]);
    expect(await queryRows(env.databaseUrl, `select status, run from books where user_id = 'user-a'`)).toEqual([{ status: 'ready', run: 1 }]);
    // What is not the user's, or is not there, still answers as before the budget.
    expect((await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST', user: 'user-b' })).status).toBe(404);
    expect((await api.request(`/v1/books/${bookId}/soundscapes`, { method: 'POST', user: 'user-b' })).status).toBe(404);
    // Another user's budget is their own.
    expect((await postBook(api, { title: 'Sea', pages: ['the stormy sea'] }, 'user-b')).status).toBe(202);
  });
});

describe('the budget month', () => {
  it('is the UTC month, whatever the database time zone', async () => {
    const own = await createTestEnv({ USER_MONTHLY_BUDGET_USD: '1' });
    let ownApi: TestApi | undefined;
    try {
      // A database set to local time, 14 hours ahead of UTC: there, this UTC month began 14
      // hours early.
      const dbName = new URL(own.databaseUrl).pathname.slice(1);
      await queryRows(own.databaseUrl, `alter database "${dbName}" set timezone to 'Pacific/Kiritimati'`);
      ownApi = await startTestApi(own.config);
      // Four hours before this UTC month began: last month's, though this month's by the
      // database's clock (but in the last 14 hours of a UTC month, when both agree).
      await queryRows(
        own.databaseUrl,
        `insert into provider_calls (user_id, provider, kind, units, unit_type, cost_usd, latency_ms, outcome, created_at)
         values ('user-z', 'openai', 'speech', 100, 'characters', 1.5, 10, 'ok', date_trunc('month', now() at time zone 'UTC') at time zone 'UTC' - interval '4 hours')`,
      );
      const res = await ownApi.request('/v1/audio/batches', { method: 'POST', user: 'user-z', json: { visionId: 'z', sections: sampleSections(1), variants: ['voice_only'], voice: 'alloy' } });
      expect(res.status).toBe(201);
      // This month's calls do count.
      await queryRows(
        own.databaseUrl,
        `insert into provider_calls (user_id, provider, kind, units, unit_type, cost_usd, latency_ms, outcome) values ('user-z', 'openai', 'speech', 100, 'characters', 1.5, 10, 'ok')`,
      );
      await expectBudgetExhausted(await ownApi.request('/v1/audio/batches', { method: 'POST', user: 'user-z', json: { visionId: 'z2', sections: sampleSections(1), variants: ['voice_only'], voice: 'alloy' } }));
    } finally {
      await ownApi?.close();
      await own.cleanup();
    }
  });
});
