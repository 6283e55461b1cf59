import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeAudio } from '../../apps/worker/src/ffmpeg';
import { decodePcm } from '../audio/scratch';
import { seamRatios } from '../helpers/audio';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { expectBookCountsMatchRows, postBook, uploadBook, waitForBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { fourSettingBook } from '../fixtures/books';
import { makePdf } from '../fixtures/pdf';

// The book pipeline as `npm start` runs it with no keys: the local keyword analyzer and the
// local ffmpeg soundscape synthesizer.
let env: TestEnv;
let api: TestApi;
let worker: TestWorker;

beforeAll(async () => {
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '8', BOOK_MAX_PAGES: '60', BOOK_MAX_UPLOAD_BYTES: String(200 * 1024) });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

async function soundscapeCalls(bookId: string): Promise<number> {
  const rows = await queryRows(env.databaseUrl, `select count(*)::int as n from provider_calls where book_id = $1 and kind = 'soundscape'`, [bookId]);
  return rows[0].n;
}

describe('a 40-page book with four settings', () => {
  it('gives 4 scenes and exactly 4 playable, loopable soundscapes', async () => {
    const created = await postBook(api, { title: 'Four Places', author: 'Test Author', pages: fourSettingBook() });
    expect(created.status).toBe(202);
    expect(created.body).toMatchObject({ success: true, status: 'processing', stats: { totalSpreads: 20, processedSpreads: 0 } });
    const book = await waitForBook(api, created.body.bookId);
    expect(book).toMatchObject({
      success: true,
      status: 'ready',
      stats: { totalSpreads: 20, processedSpreads: 20, scenesCreated: 4, soundscapesGenerated: 4 },
    });
    expect(book.warning).toBeUndefined();
    expect(book.errors).toBeUndefined();
    expect(book.stats.processingTimeSeconds).toBeGreaterThan(0);
    await expectBookCountsMatchRows(env.databaseUrl, book.bookId);
    expect(await soundscapeCalls(book.bookId)).toBe(4);

    const timeline = await readJson(await api.request(`/v1/books/${book.bookId}/scenes`, { user: 'reader' }));
    expect(timeline.scenes.map((s: any) => [s.firstSpread, s.lastSpread])).toEqual([[0, 4], [5, 9], [10, 14], [15, 19]]);
    expect(timeline.scenes[1]).toMatchObject({ firstPage: 11, lastPage: 20 });
    for (const scene of timeline.scenes) {
      expect(scene.description.length).toBeGreaterThan(0);
      expect(scene.soundscape.status).toBe('completed');
      const res = await api.request(scene.soundscape.audioUrl, { user: 'reader' });
      expect(res.status).toBe(200);
      const path = join(env.storageDir, `scene-${scene.index}.mp3`);
      await writeFile(path, Buffer.from(await res.arrayBuffer()));
      const probe = await probeAudio(path);
      expect(probe.durationMs).toBeGreaterThan(7_000);
      // Loopable: the step from the last sample to the first is no click.
      for (const ratio of seamRatios(await decodePcm(path, 2), 2)) expect(ratio).toBeLessThan(1.5);
      const ranged = await api.request(scene.soundscape.audioUrl, { user: 'reader', headers: { Range: 'bytes=0-9' } });
      expect(ranged.status).toBe(206);
    }

    // Starting again keeps every finished soundscape: no new provider call.
    const again = await api.request(`/v1/books/${book.bookId}/soundscapes`, { method: 'POST', user: 'reader' });
    expect(again.status).toBe(202);
    expect((await api.request(`/v1/books/${book.bookId}/soundscapes`, { method: 'POST', user: 'reader' })).status).toBe(409);
    const rerun = await waitForBook(api, book.bookId);
    expect(rerun).toMatchObject({ status: 'ready', stats: { scenesCreated: 4, soundscapesGenerated: 4 } });
    expect(await soundscapeCalls(book.bookId)).toBe(4);
  });

  it('ends ready with the seed warning and error records when some spreads fail', async () => {
    const pages = fourSettingBook().slice(0, 12);
    pages[4] = `${pages[4]} [[analysis-fails]]`;
    pages[8] = `${pages[8]} [[analysis-fails]]`;
    const created = await postBook(api, { title: 'Some Failures', pages });
    const book = await waitForBook(api, created.body.bookId);
    expect(book).toMatchObject({ success: true, status: 'ready', warning: 'Some spreads failed to process', stats: { totalSpreads: 6, processedSpreads: 4, errorCount: 2 } });
    expect(book.errors).toHaveLength(2);
    const byIndex = [...book.errors].sort((a: any, b: any) => a.spreadIndex - b.spreadIndex);
    expect(byIndex[0]).toMatchObject({ spreadIndex: 2, pages: '5-6', errorType: 'ContentAnalysisError', attempt: 1 });
    expect(byIndex[1]).toMatchObject({ spreadIndex: 4, pages: '9-10', errorType: 'ContentAnalysisError' });
    for (const e of book.errors) {
      expect(e.message).toMatch(/could not be analysed/);
      expect(typeof e.timestamp).toBe('string');
      expect(typeof e.stack).toBe('string');
    }
    await expectBookCountsMatchRows(env.databaseUrl, book.bookId);
  });

  it('ends failed with the seed error when every spread fails', async () => {
    const pages = ['The forest [[analysis-fails]]', 'more', 'The sea [[analysis-fails]]', 'more'];
    const created = await postBook(api, { title: 'All Failures', pages });
    const book = await waitForBook(api, created.body.bookId);
    expect(book).toMatchObject({ success: false, status: 'failed', error: 'All spreads failed to process', stats: { processedSpreads: 0, scenesCreated: 0, soundscapesGenerated: 0, errorCount: 2 } });
    expect(await soundscapeCalls(book.bookId)).toBe(0);
  });
});

describe('book uploads and limits', () => {
  it('accepts a .txt split on form feeds and a .pdf with one page per page', async () => {
    const txt = await uploadBook(api, { name: 'tale.txt', type: 'text/plain', data: 'Page one in the forest.\fPage two by the sea.\fPage three in the city at night.' }, { author: 'A. Writer' });
    expect(txt.status).toBe(202);
    expect(txt.body).toMatchObject({ title: 'tale', author: 'A. Writer', stats: { totalSpreads: 2 }, progress: { pageCount: 3 } });
    const pdf = await uploadBook(api, { name: 'book.pdf', type: 'application/pdf', data: makePdf(['The castle hall was cold.', 'A fire burned low.', 'Night fell on the tower.', 'Rain came at dawn.']) }, { title: 'A PDF' });
    expect(pdf.status).toBe(202);
    expect(pdf.body).toMatchObject({ title: 'A PDF', stats: { totalSpreads: 2 }, progress: { pageCount: 4 } });
    expect((await waitForBook(api, pdf.body.bookId)).status).toBe('ready');
  });

  it('answers 413, 415, 422 and 400 clearly, and writes nothing', async () => {
    const before = (await readJson(await api.request('/v1/books?limit=100', { user: 'limits' }))).books.length;
    const big = await uploadBook(api, { name: 'big.txt', type: 'text/plain', data: 'word '.repeat(60_000) }, {}, 'limits');
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('payload_too_large');
    const many = await postBook(api, { title: 'Long', pages: Array.from({ length: 61 }, (_, i) => `page ${i}`) }, 'limits');
    expect(many.status).toBe(422);
    expect(many.body.error).toMatchObject({ code: 'too_many_pages', message: 'the book has 61 pages; the limit is 60' });
    const empty = await postBook(api, { title: 'Empty', pages: ['', '  '] }, 'limits');
    expect(empty.status).toBe(422);
    const badPdf = await uploadBook(api, { name: 'x.pdf', type: 'application/pdf', data: 'not a pdf at all' }, {}, 'limits');
    expect(badPdf.status).toBe(400);
    const doc = await uploadBook(api, { name: 'x.docx', type: 'application/msword', data: 'PK...' }, {}, 'limits');
    expect(doc.status).toBe(415);
    const noTitle = await postBook(api, { pages: ['a'] }, 'limits');
    expect(noTitle.status).toBe(400);
    const xml = await api.request('/v1/books', { method: 'POST', headers: { 'Content-Type': 'application/xml' }, body: '<book/>', user: 'limits' });
    expect(xml.status).toBe(415);
    const after = (await readJson(await api.request('/v1/books?limit=100', { user: 'limits' }))).books.length;
    expect(after).toBe(before);
  });

  it("answers 404 for another user's book, scenes and soundscape", async () => {
    const created = await postBook(api, { title: 'Mine', pages: ['The forest at dawn.', 'Birds sang.'] }, 'owner');
    const book = await waitForBook(api, created.body.bookId, 'owner');
    const timeline = await readJson(await api.request(`/v1/books/${book.bookId}/scenes`, { user: 'owner' }));
    for (const path of [`/v1/books/${book.bookId}`, `/v1/books/${book.bookId}/scenes`, timeline.scenes[0].soundscape.audioUrl]) {
      expect((await api.request(path, { user: 'stranger' })).status, path).toBe(404);
    }
    expect((await api.request(`/v1/books/${book.bookId}/soundscapes`, { method: 'POST', user: 'stranger' })).status).toBe(404);
    expect((await api.request('/v1/books/not-an-id', { user: 'stranger' })).status).toBe(404);
    const list = await readJson(await api.request('/v1/books?status=ready', { user: 'owner' }));
    expect(list.books.map((b: any) => b.bookId)).toContain(book.bookId);
  });
});
