import type { Request, RequestHandler } from 'express';
import multer from 'multer';
import { z } from 'zod';
import { PAGE_MAX_CHARS, splitTextIntoPages } from '@soundqueue/shared/pages';
import { HttpError, validate } from '../http-errors';
import { extractPdfPages, PdfPageLimitError } from './pdf';

export interface BookInput {
  title: string;
  author: string | null;
  pages: string[];
}

export const jsonBookSchema = z
  .object({
    title: z.string().trim().min(1, 'must not be empty').max(300, 'must be at most 300 characters'),
    author: z.string().trim().max(300, 'must be at most 300 characters').optional(),
    pages: z.array(z.string().max(PAGE_MAX_CHARS, `a page must be at most ${PAGE_MAX_CHARS} characters`)).min(1, 'a book needs at least one page'),
  })
  .strict();

// Strict like the JSON form: a misspelt field ("titel") is refused, not dropped unseen.
const formFields = z
  .object({
    title: z.string().trim().min(1, 'must not be empty').max(300, 'must be at most 300 characters').optional(),
    author: z.string().trim().max(300, 'must be at most 300 characters').optional(),
  })
  .strict();

/**
 * Multer reading one file into memory, bounded by the upload limit, its name read as UTF-8. A body busboy cannot
 * parse ("Malformed part header", "Unexpected end of form", …) is the client's fault: 400,
 * not the 500 an error without a status became; multer's own limit errors (LIMIT_*) keep
 * their codes for the error handler (413 for the file size).
 */
export function uploadMiddleware(maxBytes: number): RequestHandler {
  const upload = multer({
    storage: multer.memoryStorage(),
    limits: { fileSize: maxBytes, files: 1, fields: 10, fieldSize: 10_000 },
    // Browsers and curl send a file name as raw UTF-8 bytes; multer's default (latin1) made
    // "Война и мир.txt" the title "ÐÐ¾Ð¹Ð½Ð°…". An RFC 5987 filename* still names its own charset.
    defParamCharset: 'utf8',
  }).single('file');
  return (req, res, next) =>
    upload(req, res, (error?: unknown) => {
      if (!error || (error as { code?: unknown }).code !== undefined) return next(error);
      next(new HttpError(400, 'invalid_upload', `the multipart body could not be read: ${(error as Error).message ?? String(error)}`));
    });
}

const tooManyPages = (pages: number, limit: number) =>
  new HttpError(422, 'too_many_pages', `the book has ${pages} pages; the limit is ${limit}`, { pages, limit });

function checkPages(pages: string[], maxPages: number, noTextMessage = 'the book has no text to analyse'): string[] {
  if (pages.length > maxPages) throw tooManyPages(pages.length, maxPages);
  if (!pages.some((p) => p.trim().length > 0)) throw new HttpError(422, 'no_text', noTextMessage);
  return pages;
}

// Control characters are never part of a title a person reads; a file name may carry any,
// since an RFC 5987 filename* percent-encodes bytes (NUL included, which PostgreSQL cannot
// store: the insert failed with a 500). Unlike the title field, the name is not validated.
const TITLE_CONTROL_CHARS = /[\u0000-\u001F\u007F]/g;

/**
 * The default title: the file's name without its extension or control characters, trimmed
 * as a title field is, and at most the 300 characters (UTF-16 units) a title field may have,
 * cut before a surrogate pair that would not fit rather than inside it; '' when nothing is
 * left (the caller says 'Untitled').
 */
function titleFromFileName(name: string): string {
  const bare = name.replace(/\.[^.]+$/, '').replace(TITLE_CONTROL_CHARS, '').trim();
  let title = '';
  for (const char of bare) {
    if (title.length + char.length > 300) break;
    title += char;
  }
  return title.trim();
}

// A scanned or image-only PDF is a well-formed upload with no text in it, the same case as an
// empty .txt (422 no_text), not a file that could not be read (400); the message says why.
const PDF_NO_TEXT = 'the PDF has no text layer (scanned or image-only pages); OCR is not supported, so upload a PDF with text or a .txt';

/** An empty or blank author (a form's empty field) is no author: null, as when it is left out, not "". */
const authorOf = (author: string | undefined): string | null => author || null;

/** Reads a book from JSON pages, or from an uploaded .txt or .pdf file. */
export async function readBookInput(req: Request, maxPages: number): Promise<BookInput> {
  if (req.is('application/json')) {
    const body = validate(jsonBookSchema, req.body);
    return { title: body.title, author: authorOf(body.author), pages: checkPages(body.pages, maxPages) };
  }
  const fields = validate(formFields, req.body ?? {});
  const file = req.file;
  if (!file) throw new HttpError(400, 'validation_failed', 'body.file: upload a .txt or .pdf file in the "file" field', [{ path: 'body.file', message: 'required' }]);
  const name = file.originalname.toLowerCase();
  const title = fields.title ?? titleFromFileName(file.originalname);
  let pages: string[];
  let noTextMessage: string | undefined;
  if (name.endsWith('.pdf') || file.mimetype === 'application/pdf') {
    noTextMessage = PDF_NO_TEXT;
    // The page count is checked before extraction, which is what takes the time.
    pages = await extractPdfPages(new Uint8Array(file.buffer), { maxPages }).catch((error: unknown) => {
      throw error instanceof PdfPageLimitError ? tooManyPages(error.pageCount, error.limit) : error;
    });
    // A PDF's pages are the reader's pages, so one is never split as a .txt is; one longer
    // than a JSON page may be (a page of 6-point type, or text hidden off the page) is refused
    // with its number rather than sent whole to the analysis provider.
    const long = pages.findIndex((page) => page.length > PAGE_MAX_CHARS);
    if (long >= 0) {
      throw new HttpError(422, 'page_too_long', `page ${long + 1} of the PDF has ${pages[long]!.length} characters of text; a page can have at most ${PAGE_MAX_CHARS}`, {
        page: long + 1,
        characters: pages[long]!.length,
        limit: PAGE_MAX_CHARS,
      });
    }
  } else if (name.endsWith('.txt') || file.mimetype.startsWith('text/plain')) {
    const text = new TextDecoder('utf-8', { fatal: false }).decode(file.buffer);
    if (text.includes('\u0000')) throw new HttpError(415, 'unsupported_media_type', 'the .txt file is not text');
    pages = splitTextIntoPages(text);
  } else {
    throw new HttpError(415, 'unsupported_media_type', 'upload a .txt or .pdf file');
  }
  return { title: title || 'Untitled', author: authorOf(fields.author), pages: checkPages(pages, maxPages, noTextMessage) };
}
