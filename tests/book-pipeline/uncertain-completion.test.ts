import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobId } from '@soundqueue/shared/queues';
import { storageKeys } from '@soundqueue/shared/storage/index';
import { soundscapeWith } from '../helpers/providers';
import { startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { expectBookCountsMatchRows, postBook, timeOutBookRun, waitForBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

// A soundscape's completion whose outcome the job cannot know: its connection is lost in the
// middle of the completion's transaction (which PostgreSQL then rolls back) and the database
// cannot be reached to read the row back. The job keeps the file it stored, since the row may
// name it. Before, nothing ever removed it: the retry took over the lapsed claim and stored a
// file of its own, and the first one stayed in storage for ever, named by no row. Now a job
// that takes over a lapsed claim removes the file stored under that claim's key (the row does
// not name it, or the soundscape would be completed), as does the end of a run that voids a
// claim.

let env: TestEnv;
let api: TestApi;
let proxy: TcpProxy;
let worker: TestWorker | undefined;

beforeAll(async () => {
  // A short lease, so that the retry takes the lapsed claim over soon; attempts to spare for
  // those the outage costs.
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '2', WORKER_LOCK_DURATION_MS: '2000', JOB_ATTEMPTS: '6' });
  api = await startTestApi(env.config);
  proxy = await startTcpProxy(env.databaseUrl);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await proxy?.close();
  await env?.cleanup();
});

async function storedFiles(bookId: string): Promise<string[]> {
  return readdir(join(env.config.STORAGE_DIR, 'soundscapes', bookId)).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return [];
    throw error;
  });
}

describe('a soundscape completion whose outcome is not known', () => {
  it('leaves only the file the row names once the soundscape is made: the retry removes the one kept', async () => {
    const created = await postBook(api, { title: 'Uncertain', pages: ['the stormy sea', 'waves on the sea'] });
    const bookId = created.body.bookId as string;
    // The connection is lost as the book's counters are updated, inside the completion's
    // transaction (so it is rolled back), and from then on the database cannot be reached.
    const cut = proxy.cutAnswerTo(
      (sent) => sent.includes('update "soundscapes"') && sent.includes('"file_key"'),
      (sent) => sent.includes('update "books"'),
      { refuse: true },
    );
    const port = new URL(proxy.url).port;
    const database = new URL(env.databaseUrl).pathname.slice(1);
    worker = await startTestWorker({ ...env.config, DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/${database}` });
    await cut;
    const [sound] = await queryRows(env.databaseUrl, 'select id from soundscapes where book_id = $1', [bookId]);
    const id = jobId.soundscape(sound.id, 1);
    // The attempt has ended (keeping its file: the completion may have gone through); the
    // database is back.
    await waitFor(async () => ((await worker!.ctx.queues.soundscape.getJob(id))?.attemptsMade ?? 0) >= 1, { what: 'the attempt to fail' });
    expect(await storedFiles(bookId)).toHaveLength(1);
    proxy.accept();

    const book = await waitForBook(api, bookId);
    expect(book).toMatchObject({ status: 'ready', stats: { soundscapesGenerated: 1 } });
    const [made] = await queryRows(env.databaseUrl, 'select status, file_key from soundscapes where id = $1', [sound.id]);
    expect(made.status).toBe('completed');
    expect(await storedFiles(bookId)).toEqual([made.file_key.split('/').pop()]);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
    await worker.close();
    worker = undefined;
  });

  it('leaves no file once its run ends without it: the end voids the claim and removes what it stored', async () => {
    // The holder of the claim stored its file and then could not record it, nor be retried
    // (its last attempt, or its worker gone): the run's end (here the reconciler's timeout)
    // fails the soundscape. The provider holds the job until the end, which is then its
    // stand-in: the file under its claim's key is there as the holder would have left it.
    let release: () => void = () => {};
    worker = await startTestWorker(env.config, {
      providers: soundscapeWith(env.config, () => new Promise<void>((resolve) => (release = resolve))),
    });
    try {
      const created = await postBook(api, { title: 'Stopped', pages: ['the stormy sea', 'waves on the sea'] });
      const bookId = created.body.bookId as string;
      const [held] = await waitFor(async () => {
        const rows = await queryRows(env.databaseUrl, `select id, claim from soundscapes where book_id = $1 and status = 'generating'`, [bookId]);
        return rows.length > 0 ? rows : null;
      }, { what: 'the soundscape to be claimed' });
      await worker.ctx.storage.put(storageKeys.soundscape(bookId, held.id, held.claim), Buffer.from('stored, never recorded'), 'audio/mpeg');
      expect(await storedFiles(bookId)).toHaveLength(1);

      await timeOutBookRun(worker, env.databaseUrl, bookId);
      const [failed] = await queryRows(env.databaseUrl, 'select status, claim, file_key from soundscapes where id = $1', [held.id]);
      expect(failed).toEqual({ status: 'failed', claim: null, file_key: null });
      expect(await storedFiles(bookId)).toEqual([]);

      // The job, still alive, stores what its provider answers and removes it itself, unrecorded.
      release();
      const job = await waitFor(async () => {
        const found = await worker!.ctx.queues.soundscape.getJob(jobId.soundscape(held.id, 1));
        return found && (await found.isCompleted()) ? found : null;
      }, { what: 'the held job to end' });
      expect(job.returnvalue).toEqual({ skipped: expect.stringMatching(/no longer holds the soundscape/) });
      expect(await storedFiles(bookId)).toEqual([]);
      await expectBookCountsMatchRows(env.databaseUrl, bookId);
    } finally {
      release();
    }
  });
});
