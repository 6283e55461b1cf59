import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobId } from '@soundqueue/shared/queues';
import { startTestApi, startTestWorker, tokenFor, type TestApi, type TestWorker } from '../helpers/app';
import { endedJob, expectBookCountsMatchRows, postBook, waitForBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { openSse } from '../helpers/sse';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';

// A soundscape's completion that PostgreSQL committed but whose answer never reached the
// worker: the worker's connections go through a TCP proxy, which passes the completion's
// COMMIT on and drops the connection as the server answers it. Before, the job took the
// error for a failure, found its claim gone (the completion had released it), ended as "no
// longer holds its claim", and the completion's events were never published: an open event
// stream missed the soundscape and the book's counters until a snapshot. Now the job sees
// from the row that its completion went through, completes with its result and publishes
// the soundscape's and the book's state.

let env: TestEnv;
let api: TestApi;
let proxy: TcpProxy;
let worker: TestWorker | undefined;

beforeAll(async () => {
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '2' });
  api = await startTestApi(env.config);
  proxy = await startTcpProxy(env.databaseUrl);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await proxy?.close();
  await env?.cleanup();
});

describe('a soundscape completion committed whose answer is lost', () => {
  it('completes the job with its result, publishes the soundscape and the counters, and keeps its one file', async () => {
    const created = await postBook(api, { title: 'Unanswered', pages: ['the stormy sea', 'waves on the sea'] });
    const bookId = created.body.bookId as string;
    const stream = await openSse(`${api.url}/v1/books/${bookId}/events`, { Authorization: `Bearer ${await tokenFor('reader')}` });
    try {
      await stream.waitFor((e) => e.length >= 1);
      expect(stream.events[0]!.event).toBe('snapshot');
      // The soundscape's completion (the only update of a soundscape that sets its file), then its COMMIT.
      const cut = proxy.cutAnswerTo((sent) => sent.includes('update "soundscapes"') && sent.includes('"file_key"'), (sent) => sent.includes('commit'));
      const port = new URL(proxy.url).port;
      const database = new URL(env.databaseUrl).pathname.slice(1);
      worker = await startTestWorker({ ...env.config, DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/${database}` });
      await cut;

      const book = await waitForBook(api, bookId);
      expect(book).toMatchObject({ status: 'ready', stats: { soundscapesGenerated: 1 } });
      expect(book.warning).toBeUndefined();
      const [sound] = await queryRows(env.databaseUrl, 'select id, status, attempts, file_key from soundscapes where book_id = $1', [bookId]);
      // One attempt: the one whose completion lost its answer.
      expect(sound).toMatchObject({ status: 'completed', attempts: 1 });
      const job = await endedJob(worker, 'soundscape', jobId.soundscape(sound.id, 1));
      expect(job.failedReason).toBeUndefined();
      expect(job.attemptsMade).toBe(1);
      expect(job.returnvalue).toEqual({ durationMs: expect.any(Number) });
      const files = await readdir(join(env.config.STORAGE_DIR, 'soundscapes', bookId));
      expect(files).toEqual([sound.file_key.split('/').pop()]);

      await stream.ended;
      const soundEvents = stream.events.filter((e) => e.event === 'soundscape.updated');
      expect(soundEvents.map((e) => e.data)).toEqual([{ soundscapeId: sound.id, sceneId: expect.any(String), status: 'completed', durationMs: job.returnvalue.durationMs }]);
      // The counters after it show the soundscape, before the book's end.
      const after = stream.events.slice(stream.events.indexOf(soundEvents[0]!));
      expect(after.find((e) => e.event === 'book.updated')?.data).toMatchObject({ soundscapesGenerated: 1 });
      expect(stream.events.at(-1)!.event).toBe('book.ready');
      await expectBookCountsMatchRows(env.databaseUrl, bookId);
    } finally {
      stream.close();
    }
  });
});
