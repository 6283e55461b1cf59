import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_TARGET_CHARS } from '@soundqueue/shared/pages';
import { readJson, startTestApi, type TestApi } from '../helpers/app';
import { uploadBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { makePdf } from '../fixtures/pdf';

// Uploads through the real API (multer, extraction, the insert into PostgreSQL): what a PDF
// or .txt file becomes, and how each kind of bad file is refused. No worker runs; a created
// book stays queued until the environment is dropped.
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ BOOK_MAX_PAGES: '500' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

async function storedText(bookId: string): Promise<string> {
  const rows = await queryRows(env.databaseUrl, `select text from book_spreads where book_id = $1 order by index`, [bookId]);
  return rows.map((row: { text: string }) => row.text).join('\n\n');
}

async function bookCount(): Promise<number> {
  return (await queryRows(env.databaseUrl, 'select count(*)::int as n from books'))[0].n;
}

describe('PDF uploads', () => {
  it('stores a PDF whose font maps glyphs to NUL and other control characters, without them', async () => {
    // '#' → U+0000 made PostgreSQL refuse the insert ("invalid byte sequence … 0x00"): a 500.
    const pdf = makePdf(['The harbour #was# quiet~ at dawn.', 'Gulls cried.'], { toUnicode: { '#': 0x00, '~': 0x1b } });
    const created = await uploadBook(api, { name: 'harbour.pdf', type: 'application/pdf', data: pdf });

    expect(created.status).toBe(202);
    expect(created.body).toMatchObject({ title: 'harbour', progress: { pageCount: 2 } });
    expect(await storedText(created.body.bookId)).toBe('The harbour was quiet at dawn.\n\nGulls cried.');
  });

  it('refuses a PDF with more pages than BOOK_MAX_PAGES with 422, writing nothing', async () => {
    // The refusal comes from the page count, before any text is extracted (extractPdfPages
    // throws PdfPageLimitError from its count check: tests/books/pdf.test.ts). Extracting 8,000
    // tiny pages first took 13 s of a core per request on a 2-core machine.
    const pdf = makePdf(Array.from({ length: 501 }, () => 'x'));
    const booksBefore = await bookCount();
    const refused = await uploadBook(api, { name: 'long.pdf', type: 'application/pdf', data: pdf });
    expect(refused.status).toBe(422);
    expect(refused.body.error).toEqual({ code: 'too_many_pages', message: 'the book has 501 pages; the limit is 500', details: { pages: 501, limit: 500 } });
    expect(await bookCount()).toBe(booksBefore);
  });

  it('refuses a PDF with a page longer than a JSON page may be with 422 page_too_long, writing nothing', async () => {
    const long = 'The rain fell on the long grey road. '.repeat(1_400); // 51,800 characters
    const booksBefore = await bookCount();
    const refused = await uploadBook(api, { name: 'dense.pdf', type: 'application/pdf', data: makePdf(['A short first page.', long.trim()], { leading: 1 }) });
    expect(refused.status).toBe(422);
    expect(refused.body.error).toEqual({
      code: 'page_too_long',
      message: 'page 2 of the PDF has 51799 characters of text; a page can have at most 50000',
      details: { page: 2, characters: 51_799, limit: 50_000 },
    });
    expect(await bookCount()).toBe(booksBefore);
    // At the limit it is a book.
    const fits = await uploadBook(api, { name: 'full.pdf', type: 'application/pdf', data: makePdf([long.slice(0, 50_000).trim()], { leading: 1 }) });
    expect(fits.status).toBe(202);
  });

  it('answers a PDF with no text layer 422 no_text, as it answers an empty .txt', async () => {
    const booksBefore = await bookCount();
    const scanned = await uploadBook(api, { name: 'scan.pdf', type: 'application/pdf', data: makePdf(['', '', '']) });
    const emptyTxt = await uploadBook(api, { name: 'empty.txt', type: 'text/plain', data: ' \n\n ' });

    expect(scanned.status).toBe(422);
    expect(scanned.body.error).toMatchObject({ code: 'no_text', message: expect.stringMatching(/no text layer .*OCR is not supported/) });
    expect(emptyTxt.status).toBe(422);
    expect(emptyTxt.body.error).toMatchObject({ code: 'no_text', message: 'the book has no text to analyse' });
    // A PDF that cannot be opened is still the client's malformed file: 400.
    const corrupt = await uploadBook(api, { name: 'broken.pdf', type: 'application/pdf', data: '%PDF-1.7\nnot really' });
    expect(corrupt.status).toBe(400);
    expect(corrupt.body.error.code).toBe('validation_failed');
    expect(await bookCount()).toBe(booksBefore);
  });
});

/** A multipart body written byte by byte, so the file name goes as raw UTF-8 as browsers and curl send it. */
function rawUpload(filename: string, content: string): { body: Buffer; contentType: string } {
  const boundary = '----soundqueue-test-boundary';
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="`),
    Buffer.from(filename, 'utf8'),
    Buffer.from(`"\r\nContent-Type: text/plain\r\n\r\n${content}\r\n--${boundary}--\r\n`),
  ]);
  return { body, contentType: `multipart/form-data; boundary=${boundary}` };
}

describe('upload file names', () => {
  it('reads a UTF-8 file name as UTF-8 for the title', async () => {
    const { body, contentType } = rawUpload('Война и мир.txt', 'Well, Prince, so Genoa and Lucca are now just family estates.');
    const res = await api.request('/v1/books', { method: 'POST', body, headers: { 'Content-Type': contentType }, user: 'reader' });
    const created = await readJson(res);

    expect(res.status).toBe(202);
    expect(created.title).toBe('Война и мир');
    const stored = await queryRows(env.databaseUrl, 'select title from books where id = $1', [created.bookId]);
    expect(stored[0].title).toBe('Война и мир');
  });

  it('takes a file name with control characters or only spaces as a title without them, never a 500', async () => {
    // An RFC 5987 filename* may percent-encode any byte: a NUL in the name made the title's
    // insert fail in PostgreSQL (a 500), where the file's contents and fields are checked.
    const upload = async (disposition: string) => {
      const boundary = '----soundqueue-test-boundary';
      const body = `--${boundary}\r\nContent-Disposition: form-data; name="file"; ${disposition}\r\nContent-Type: text/plain\r\n\r\nThe forest at dawn.\r\n--${boundary}--\r\n`;
      const res = await api.request('/v1/books', { method: 'POST', body, headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}` }, user: 'reader' });
      return { status: res.status, body: await readJson(res) };
    };
    const nul = await upload(`filename*=UTF-8''The%00Forest%01.txt`);
    expect(nul.status).toBe(202);
    expect(nul.body.title).toBe('TheForest');
    // A name of spaces is no title, as a blank title field is none.
    const blank = await upload(`filename="   .txt"`);
    expect(blank.status).toBe(202);
    expect(blank.body.title).toBe('Untitled');
    // Cut at 300 characters without splitting an emoji's surrogate pair.
    const long = await upload(`filename*=UTF-8''a${encodeURIComponent('😀'.repeat(200))}.txt`);
    expect(long.status).toBe(202);
    expect(long.body.title).toBe(`a${'😀'.repeat(149)}`);
  });
});

describe('upload form fields', () => {
  it('refuses a form field it does not know with 400, as the JSON form refuses an unknown key, writing nothing', async () => {
    // A misspelt "titel" was dropped without a word: the book got the file name as its title.
    const booksBefore = await bookCount();
    const refused = await uploadBook(api, { name: 'harbour.txt', type: 'text/plain', data: 'The harbour was quiet.' }, { titel: 'The Harbour', author: 'A. Writer' });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ code: 'validation_failed', message: expect.stringContaining('titel') });
    expect(refused.body.error.details).toEqual([expect.objectContaining({ path: 'body', message: expect.stringContaining('titel') })]);
    expect(await bookCount()).toBe(booksBefore);
    // The same fields spelt right make a book.
    const created = await uploadBook(api, { name: 'harbour.txt', type: 'text/plain', data: 'The harbour was quiet.' }, { title: 'The Harbour', author: 'A. Writer' });
    expect(created.status).toBe(202);
    expect(created.body).toMatchObject({ title: 'The Harbour', author: 'A. Writer' });
  });
});

describe('author', () => {
  it('reads an empty or blank author, JSON or form field, as no author (null), not ""', async () => {
    const json = async (author: string) => {
      const res = await api.request('/v1/books', { method: 'POST', json: { title: 'Dawn', author, pages: ['The sun rose.'] }, user: 'reader' });
      return { status: res.status, body: await readJson(res) };
    };
    const form = (author: string) => uploadBook(api, { name: 'dawn.txt', type: 'text/plain', data: 'The sun rose.' }, { author });
    for (const created of [await json(''), await json('   '), await form(''), await form('  ')]) {
      expect(created.status).toBe(202);
      expect(created.body.author).toBeNull();
      const [row] = await queryRows(env.databaseUrl, 'select author from books where id = $1', [created.body.bookId]);
      expect(row.author).toBeNull();
    }
    // A real name is kept, trimmed.
    expect((await json('  Ann Writer ')).body.author).toBe('Ann Writer');
  });
});

describe('.txt uploads', () => {
  it('splits text without spaces into pages of at most about 1,800 characters', async () => {
    // Japanese has no spaces between words: 21,000 characters were one page.
    const text = '森は暗かった。'.repeat(3_000);
    const created = await uploadBook(api, { name: 'mori.txt', type: 'text/plain', data: text });

    expect(created.status).toBe(202);
    expect(created.body.progress.pageCount).toBe(12);
    const spreads = await queryRows(env.databaseUrl, 'select text from book_spreads where book_id = $1 order by index', [created.body.bookId]);
    expect(spreads).toHaveLength(6);
    for (const spread of spreads) {
      for (const page of spread.text.split('\n\n')) expect(page.length).toBeLessThanOrEqual(PAGE_TARGET_CHARS);
    }
    expect(spreads.map((spread) => spread.text.replace(/\s/g, '')).join('')).toBe(text);
  });
});
