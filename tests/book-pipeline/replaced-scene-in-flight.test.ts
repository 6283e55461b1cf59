import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { soundscapeWith } from '../helpers/providers';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { postBook, waitForBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// A soundscape job still generating when running generation again replaces its scene (a job
// of an earlier run whose worker lived on past the run's end) stored its file after the row
// had gone: the completion changed nothing and the file stayed in storage, served by nothing.

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let entered!: () => void;
const generating = new Promise<void>((resolve) => (entered = resolve));
let release!: () => void;
const released = new Promise<void>((resolve) => (release = resolve));

beforeAll(async () => {
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '2' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config, {
    providers: soundscapeWith(env.config, async () => {
      entered();
      await released;
    }),
  });
});
afterAll(async () => {
  release?.();
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

describe('a soundscape whose scene is replaced while it is generated', () => {
  it('does not leave its file in storage', async () => {
    const created = await postBook(api, { title: 'Forest', pages: ['a dark forest at night', 'the forest again'] });
    expect(created.status).toBe(202);
    const bookId = created.body.bookId as string;
    await generating;
    const [row] = await queryRows(env.databaseUrl, `select s.id, s.scene_id from soundscapes s where s.book_id = $1`, [bookId]);
    // What segmenting again does to a scene it replaces (processors/book.ts): the scene's row
    // goes and its soundscape's with it. Done directly here: the real sequence needs a
    // restart while a job of the run before still runs, which only a reconciler timeout allows.
    await queryRows(env.databaseUrl, `delete from scenes where id = $1`, [row.scene_id]);
    release();

    // The book's root ends the book once its soundscape job has finished.
    await waitForBook(api, bookId);
    // Stored under its claim's key (one file per claim): none of the soundscape's files is left.
    const dir = join(env.config.STORAGE_DIR, 'soundscapes', bookId);
    expect(existsSync(dir) ? (await readdir(dir)).filter((name) => name.startsWith(row.id)) : []).toEqual([]);
    const calls = await queryRows(env.databaseUrl, `select kind, outcome from provider_calls where book_id = $1 and kind = 'soundscape'`, [bookId]);
    // It was generated (and paid for): the file existed, and was removed.
    expect(calls).toEqual([{ kind: 'soundscape', outcome: 'ok' }]);
  });
});
