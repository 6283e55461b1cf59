import { extractText, getDocumentProxy } from 'unpdf';
import { ValidationError } from '@soundqueue/shared/errors';

// Node 20 lacks Promise.withResolvers (and a few newer built-ins) that pdf.js uses, but the
// pdf.js build bundled in unpdf 1.6 installs its own polyfills when it loads, so no polyfill
// is needed here; tests/books/pdf.test.ts runs the real extraction on Node 20 to keep it so.

/** The PDF has more pages than the caller takes; thrown before any text is extracted. */
export class PdfPageLimitError extends Error {
  override name = 'PdfPageLimitError';
  constructor(
    readonly pageCount: number,
    readonly limit: number,
  ) {
    super(`the PDF has ${pageCount} pages; the limit is ${limit}`);
  }
}

export interface ExtractPdfOptions {
  /**
   * Refuse (PdfPageLimitError) a document with more pages than this, on its page count and
   * before any page is read: extraction costs a couple of milliseconds a page, so a 1.3 MB
   * PDF of 8,000 tiny pages took 13 s to be refused afterwards (20,000 pages: 2 minutes).
   */
  maxPages?: number;
}

/**
 * The text of every page, in order. A page without text (an image, a blank page) is '' so
 * page numbers stay those of the PDF. A PDF with no text on any page (scanned, image-only)
 * is a readable PDF with nothing to read: it comes back as empty pages, and the caller refuses
 * it as it refuses an empty .txt.
 */
export async function extractPdfPages(data: Uint8Array, options: ExtractPdfOptions = {}): Promise<string[]> {
  if (!hasPdfHeader(data)) {
    throw new ValidationError('The file is not a PDF (no %PDF- header).');
  }
  let document: Awaited<ReturnType<typeof getDocumentProxy>>;
  try {
    // pdf.js may transfer (detach) the buffer it is given; the copy keeps the caller's intact.
    document = await getDocumentProxy(data.slice(), { verbosity: 0 });
  } catch (error) {
    throw new ValidationError(describeOpenFailure(error), { cause: error });
  }
  try {
    if (options.maxPages !== undefined && document.numPages > options.maxPages) {
      throw new PdfPageLimitError(document.numPages, options.maxPages);
    }
    const { text } = await extractText(document, { mergePages: false });
    return text.map(normalisePageText);
  } catch (error) {
    if (error instanceof ValidationError || error instanceof PdfPageLimitError) throw error;
    throw new ValidationError(`The PDF could not be read: ${messageOf(error)}`, { cause: error });
  } finally {
    await document.destroy().catch(() => undefined);
  }
}

// The PDF spec lets the header start anywhere in the first 1,024 bytes.
function hasPdfHeader(data: Uint8Array): boolean {
  const head = Buffer.from(data.buffer, data.byteOffset, Math.min(data.byteLength, 1024)).toString('latin1');
  return head.includes('%PDF-');
}

function describeOpenFailure(error: unknown): string {
  const name = error instanceof Error ? error.name : '';
  if (name === 'PasswordException') return 'The PDF is encrypted (password-protected); upload an unprotected copy.';
  if (name === 'InvalidPDFException') return 'The PDF is corrupt or truncated and could not be opened.';
  return `The PDF could not be opened: ${messageOf(error)}`;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// C0 control characters other than tab and newline are never text a reader shows. A font's
// ToUnicode map can send a glyph to <0000>, and PostgreSQL cannot store U+0000 at all (the
// insert failed: a 500); vertical tab and form feed are spacing, so they become spaces.
const CONTROL_CHARS = /[\u0000-\u0008\u000E-\u001F]/g;

// pdf.js gives one item per text run; trailing spaces per line and runs of blank lines are noise.
function normalisePageText(text: string): string {
  return text
    .replace(CONTROL_CHARS, '')
    .replace(/\r\n?/g, '\n')
    .replace(/[\v\f]/g, ' ')
    .split('\n')
    .map((line) => line.replace(/[ \t]+/g, ' ').trimEnd())
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}
