import { describe, expect, it } from 'vitest';
import { ValidationError } from '@soundqueue/shared/errors';
import { toSpreads } from '@soundqueue/shared/pages';
import { extractPdfPages, PdfPageLimitError } from '../../apps/api/src/books/pdf';
import { fourSettingBook } from '../fixtures/books';
import { makePdf } from '../fixtures/pdf';

const flat = (text: string) => text.replace(/\s+/g, ' ').trim();

describe('extractPdfPages', () => {
  it('gives back the text of every page of a PDF, in order', async () => {
    const pages = fourSettingBook().slice(0, 6);
    const pdf = makePdf(pages);

    const extracted = await extractPdfPages(pdf);

    expect(extracted.map(flat)).toEqual(pages.map(flat));
    expect(toSpreads(extracted)).toHaveLength(3);
    // pdf.js may detach what it is given; the caller's buffer must survive.
    expect(pdf.byteLength).toBeGreaterThan(0);
    expect(await extractPdfPages(pdf)).toEqual(extracted);
  });

  it('keeps characters PDF strings must escape, and a blank page as an empty page', async () => {
    const extracted = await extractPdfPages(makePdf(['Parens (like these) and a back\\slash.', '', 'Last page.']));
    expect(extracted).toEqual(['Parens (like these) and a back\\slash.', '', 'Last page.']);
  });

  it('drops NUL and other control characters a font maps glyphs to, keeping tab and newline', async () => {
    // A subset font's ToUnicode map sending a glyph to <0000> is common in the wild; PostgreSQL
    // cannot store U+0000, so it must not leave here. Vertical tab and form feed are spacing.
    const pdf = makePdf(['Alpha #beta# gamma~.', 'one|two'], { toUnicode: { '#': 0x00, '~': 0x1b, '|': 0x0b } });
    expect(await extractPdfPages(pdf)).toEqual(['Alpha beta gamma.', 'one two']);
  });

  it('refuses a PDF with more pages than maxPages on its page count, and takes one with exactly that many', async () => {
    const pdf = makePdf(['One.', 'Two.', 'Three.']);
    const error = await extractPdfPages(pdf, { maxPages: 2 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PdfPageLimitError);
    expect(error).toMatchObject({ pageCount: 3, limit: 2 });
    expect(await extractPdfPages(pdf, { maxPages: 3 })).toEqual(['One.', 'Two.', 'Three.']);
  });

  it('refuses a file that is not a PDF', async () => {
    const text = new TextEncoder().encode('Just a text file, renamed.');
    await expect(extractPdfPages(text)).rejects.toThrow(ValidationError);
    await expect(extractPdfPages(text)).rejects.toThrow(/not a PDF/);
  });

  it('refuses a corrupt PDF', async () => {
    const garbage = new Uint8Array(4096).map((_, i) => (i * 7919) % 251);
    const corrupt = new Uint8Array([...new TextEncoder().encode('%PDF-1.7\n'), ...garbage]);
    const error = await extractPdfPages(corrupt).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).message).toMatch(/corrupt/);
    expect((error as ValidationError).retryable).toBe(false);
  });

  it('refuses an encrypted PDF', async () => {
    await expect(extractPdfPages(makePdf(['Secret.'], { encrypted: true }))).rejects.toThrow(/encrypted/);
  });

  it('gives a PDF with no text layer as empty pages, for the caller to refuse as no text', async () => {
    expect(await extractPdfPages(makePdf(['', '']))).toEqual(['', '']);
  });
});
