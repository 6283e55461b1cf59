import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobId } from '@soundqueue/shared/queues';
import { startTestApi, startTestWorker, tokenFor, type TestApi, type TestWorker } from '../helpers/app';
import { endedJob, expectBookCountsMatchRows, postBook, waitForBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { openSse, type SseStream } from '../helpers/sse';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';

// A soundscape's or a spread analysis's completion that PostgreSQL committed but whose answer
// never reached the worker: the worker's connections go through a TCP proxy, which passes the
// completion's COMMIT on and drops the connection as the server answers it. Before, the job
// took the error for a failure, found its claim gone (the completion had released it), ended
// as "no longer holds its claim", and the completion's events were never published: an open
// event stream missed them and the book's counters until a snapshot. Now the job sees from the
// row that its completion went through, completes with its result and publishes the
// soundscape's or spread's and the book's state.

let env: TestEnv;
let api: TestApi;
let proxy: TcpProxy;

beforeAll(async () => {
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '2' });
  api = await startTestApi(env.config);
  proxy = await startTcpProxy(env.databaseUrl);
});
afterAll(async () => {
  await api?.close();
  await proxy?.close();
  await env?.cleanup();
});

/**
 * Opens the book's event stream, arms the proxy's cut on the completion `completion` matches,
 * then starts a worker whose pool goes through the proxy: the stream is open before any of the
 * book's work is done, so every event of it comes on the stream.
 */
async function runBehindCut(bookId: string, completion: (sent: string) => boolean, body: (worker: TestWorker, stream: SseStream) => Promise<void>) {
  const stream = await openSse(`${api.url}/v1/books/${bookId}/events`, { Authorization: `Bearer ${await tokenFor('reader')}` });
  let worker: TestWorker | undefined;
  try {
    await stream.waitFor((e) => e.length >= 1);
    expect(stream.events[0]!.event).toBe('snapshot');
    const cut = proxy.cutAnswerTo(completion, (sent) => sent.includes('commit'));
    const port = new URL(proxy.url).port;
    const database = new URL(env.databaseUrl).pathname.slice(1);
    worker = await startTestWorker({ ...env.config, DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/${database}` });
    await cut;
    await body(worker, stream);
  } finally {
    stream.close();
    await worker?.close();
  }
}

describe('a completion committed whose answer is lost', () => {
  it('completes the job with its result, publishes the soundscape and the counters, and keeps its one file', async () => {
    const created = await postBook(api, { title: 'Unanswered', pages: ['the stormy sea', 'waves on the sea'] });
    const bookId = created.body.bookId as string;
    // The soundscape's completion (the only update of a soundscape that sets its file), then its COMMIT.
    await runBehindCut(bookId, (sent) => sent.includes('update "soundscapes"') && sent.includes('"file_key"'), async (worker, stream) => {
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
    });
  });

  it('of a spread\'s analysis: completes the job with its result, and publishes the spread and the counters', async () => {
    const created = await postBook(api, { title: 'Unanswered analysis', pages: ['a dark forest at night', 'the forest again'] });
    const bookId = created.body.bookId as string;
    // The spread's completion (the only update of a spread that sets its analysis), then its COMMIT.
    await runBehindCut(bookId, (sent) => sent.includes('update "book_spreads"') && sent.includes('"analysis"'), async (worker, stream) => {
      const book = await waitForBook(api, bookId);
      expect(book).toMatchObject({ status: 'ready', stats: { processedSpreads: 1, soundscapesGenerated: 1 } });
      expect(book.errors ?? []).toEqual([]);
      const [spread] = await queryRows(env.databaseUrl, 'select status, attempts from book_spreads where book_id = $1', [bookId]);
      expect(spread).toEqual({ status: 'analyzed', attempts: 1 });
      const job = await endedJob(worker, 'book-analyze', jobId.bookAnalyze(bookId, 0, 1));
      expect(job.failedReason).toBeUndefined();
      expect(job.attemptsMade).toBe(1);
      expect(job.returnvalue).toEqual({ sceneChanged: true });
      const calls = await queryRows(env.databaseUrl, `select outcome from provider_calls where book_id = $1 and kind = 'analysis'`, [bookId]);
      expect(calls).toEqual([{ outcome: 'ok' }]);

      await stream.ended;
      const spreadEvents = stream.events.filter((e) => e.event === 'spread.updated');
      expect(spreadEvents.map((e) => e.data)).toEqual([{ spreadIndex: 0, status: 'analyzed', analysis: expect.objectContaining({ sceneChanged: true }) }]);
      const after = stream.events.slice(stream.events.indexOf(spreadEvents[0]!));
      expect(after.find((e) => e.event === 'book.updated')?.data).toMatchObject({ processedSpreads: 1 });
      expect(stream.events.at(-1)!.event).toBe('book.ready');
      await expectBookCountsMatchRows(env.databaseUrl, bookId);
    });
  });
});
