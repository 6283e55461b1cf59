import { readdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb } from '@soundqueue/shared/db/client';
import { surelyNotCommitted } from '@soundqueue/shared/db/errors';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { expectBookCountsMatchRows, postBook, waitForBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// The database refuses a soundscape's completion after its file was stored (a connection
// error, PostgreSQL down or refusing the write). Files are keyed per claim and the retry
// claims again, so no later job writes that key: before, the file stayed in storage for ever,
// one per refused attempt. Now the attempt removes it before its error goes on, unless the
// completion may have been recorded all the same. The refusals are real: triggers on the
// soundscape's row.

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;

beforeAll(async () => {
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '2' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

/** The files stored for the book's soundscapes. */
async function storedFiles(bookId: string): Promise<string[]> {
  return readdir(join(env.config.STORAGE_DIR, 'soundscapes', bookId)).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return [];
    throw error;
  });
}

/** A trigger named `name` on the soundscapes' completions, running `body`; sequence `<name>_count` counts outside any transaction. */
async function refuseCompletions(name: string, body: string): Promise<void> {
  await queryRows(env.databaseUrl, `create sequence ${name}_count`);
  await queryRows(env.databaseUrl, `create function ${name}() returns trigger language plpgsql as $$ begin ${body}; return new; end $$`);
  await queryRows(env.databaseUrl, `create trigger ${name} before update on soundscapes for each row when (new.status = 'completed') execute function ${name}()`);
}
async function dropRefusal(name: string): Promise<void> {
  await queryRows(env.databaseUrl, `drop trigger ${name} on soundscapes`);
}

describe('a soundscape whose completion the database refuses', () => {
  it('leaves no file behind: each attempt removes the one it stored, and the soundscape fails with the refusal', async () => {
    await refuseCompletions('refuse_completion', `perform nextval('refuse_completion_count'); raise exception 'this soundscape refuses its completion'`);
    try {
      const created = await postBook(api, { title: 'Refused', pages: ['a dark forest at night', 'the forest again'] });
      const bookId = created.body.bookId as string;
      const book = await waitForBook(api, bookId);
      expect(book).toMatchObject({ status: 'ready', warning: 'Some soundscapes failed to generate', stats: { soundscapesGenerated: 0 } });
      expect(book.errors).toEqual([expect.objectContaining({ errorType: 'SoundscapeGenerationError', message: expect.stringMatching(/refuses its completion/) })]);
      const [sound] = await queryRows(env.databaseUrl, 'select status, attempts, file_key from soundscapes where book_id = $1', [bookId]);
      // Every attempt generated and stored a soundscape the database then refused.
      expect(sound).toEqual({ status: 'failed', attempts: env.config.JOB_ATTEMPTS, file_key: null });
      const [count] = await queryRows(env.databaseUrl, 'select last_value::int as n from refuse_completion_count');
      expect(count.n).toBe(env.config.JOB_ATTEMPTS);
      expect(await storedFiles(bookId)).toEqual([]);
      await expectBookCountsMatchRows(env.databaseUrl, bookId);
    } finally {
      await dropRefusal('refuse_completion');
    }
  });

  it('whose connection is lost mid-completion: the file is removed once the row shows it unrecorded, and the retry\'s is the one kept', async () => {
    // The first completion's connection is terminated from inside its own transaction.
    await refuseCompletions('lose_completion', `if nextval('lose_completion_count') = 1 then perform pg_terminate_backend(pg_backend_pid()); perform pg_sleep(5); end if`);
    try {
      const created = await postBook(api, { title: 'Lost', pages: ['the stormy sea', 'waves on the sea'] });
      const bookId = created.body.bookId as string;
      const book = await waitForBook(api, bookId);
      expect(book).toMatchObject({ status: 'ready', stats: { soundscapesGenerated: 1 } });
      expect(book.warning).toBeUndefined();
      const [sound] = await queryRows(env.databaseUrl, 'select status, attempts, file_key from soundscapes where book_id = $1', [bookId]);
      expect(sound).toMatchObject({ status: 'completed', attempts: 2 });
      expect(await storedFiles(bookId)).toEqual([sound.file_key.split('/').pop()]);
      await expectBookCountsMatchRows(env.databaseUrl, bookId);
    } finally {
      await dropRefusal('lose_completion');
    }
  });
});

describe('surelyNotCommitted, on the errors PostgreSQL and pg really give', () => {
  it('is true for a refused write and an unreachable server, false for a connection lost mid-transaction', async () => {
    const { db, close } = createDb(env.databaseUrl);
    const failure = (work: () => Promise<unknown>) => work().then(() => expect.unreachable('it should fail'), (error: unknown) => error);
    try {
      const refused = await failure(() => db.transaction((tx) => tx.execute(sql`do $$ begin raise exception 'refused'; end $$`)));
      expect(surelyNotCommitted(refused)).toBe(true);
      const lost = await failure(() => db.transaction(async (tx) => {
        await tx.execute(sql`select pg_terminate_backend(pg_backend_pid())`);
        await tx.execute(sql`select 1`);
      }));
      expect(surelyNotCommitted(lost)).toBe(false);
    } finally {
      await close();
    }
    // A port nothing listens on: connection refused.
    const spare = createServer();
    await new Promise<void>((resolve) => spare.listen(0, '127.0.0.1', resolve));
    const { port } = spare.address() as AddressInfo;
    await new Promise((resolve) => spare.close(resolve));
    const down = createDb(`postgres://postgres@127.0.0.1:${port}/postgres`);
    try {
      const unreachable = await failure(() => down.db.transaction((tx) => tx.execute(sql`select 1`)));
      expect(surelyNotCommitted(unreachable)).toBe(true);
    } finally {
      await down.close();
    }
  });
});
