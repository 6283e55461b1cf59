import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProviders } from '../../apps/worker/src/providers';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { expectBookCountsMatchRows, postBook, waitForBook } from '../helpers/books';
import { analysisRefusing } from '../helpers/providers';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// Starting generation again can change a book's scenes: a spread that failed its analysis
// continued the scene before it; analysed now, it opens a scene of its own, and the first
// scene, now shorter, is replaced. The replaced scene's rows go, and before, its soundscape's
// file stayed in storage for ever.

const pages = ['a dark forest at night', 'the forest again', 'the stormy sea', 'waves on the sea'];

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let seaFails = true;

beforeAll(async () => {
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '2' });
  api = await startTestApi(env.config);
  const real = createProviders(env.config);
  worker = await startTestWorker(env.config, {
    providers: {
      ...real,
      analysis: analysisRefusing(real, 'sea', () => seaFails),
    },
  });
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

describe('a book whose scenes change when generation runs again', () => {
  it('removes the replaced scene\'s soundscape file with its rows', async () => {
    const created = await postBook(api, { title: 'Shore', pages });
    const first = await waitForBook(api, created.body.bookId);
    expect(first).toMatchObject({ status: 'ready', stats: { processedSpreads: 1 } });
    const bookId = first.bookId as string;
    const before = await queryRows(env.databaseUrl, `select c.first_spread, c.last_spread, s.file_key from scenes c join soundscapes s on s.scene_id = c.id where c.book_id = $1`, [bookId]);
    // The failed spread continued the first scene.
    expect(before).toEqual([{ first_spread: 0, last_spread: 1, file_key: expect.any(String) }]);
    const oldFile = join(env.config.STORAGE_DIR, before[0].file_key);
    expect(existsSync(oldFile)).toBe(true);

    seaFails = false;
    const again = await api.request(`/v1/books/${bookId}/soundscapes`, { method: 'POST', user: 'reader' });
    expect(again.status).toBe(202);
    const second = await waitForBook(api, bookId);
    expect(second).toMatchObject({ status: 'ready', stats: { processedSpreads: 2 } });
    const after = await queryRows(env.databaseUrl, `select c.first_spread, c.last_spread, s.status, s.file_key from scenes c join soundscapes s on s.scene_id = c.id where c.book_id = $1 order by c.index`, [bookId]);
    expect(after.map((r: any) => [r.first_spread, r.last_spread, r.status])).toEqual([[0, 0, 'completed'], [1, 1, 'completed']]);
    for (const row of after) expect(existsSync(join(env.config.STORAGE_DIR, row.file_key)), row.file_key).toBe(true);
    // Before: still there, served by nothing.
    expect(existsSync(oldFile)).toBe(false);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });
});
