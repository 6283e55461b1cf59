import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PAGE_MAX_CHARS, PAGE_TARGET_CHARS, splitTextIntoPages, toSpreads } from '@soundqueue/shared/pages';

const words = (text: string) => text.split(/\s+/).filter(Boolean);
const sentence = (i: number) => `Sentence number ${i} walks along the quiet road and stops.`;

describe('splitTextIntoPages', () => {
  it('uses form feeds as the page breaks, dropping empty pages', () => {
    expect(splitTextIntoPages('First page.\fSecond page.\f\f  \n \fThird page.\f')).toEqual([
      'First page.',
      'Second page.',
      'Third page.',
    ]);
  });

  it('packs whole paragraphs up to about 1,800 characters', () => {
    const paragraphs = Array.from({ length: 12 }, (_, p) =>
      Array.from({ length: 8 }, (_, s) => sentence(p * 10 + s)).join(' '),
    );
    const pages = splitTextIntoPages(paragraphs.join('\n\n'));

    expect(pages.length).toBeGreaterThan(1);
    for (const page of pages) {
      expect(page.length).toBeLessThanOrEqual(PAGE_TARGET_CHARS);
      // Every page is a run of whole paragraphs.
      for (const piece of page.split('\n\n')) expect(paragraphs).toContain(piece);
    }
    // Full pages: the next paragraph would not have fitted.
    for (const [i, page] of pages.slice(0, -1).entries()) {
      const next = pages[i + 1]!.split('\n\n')[0]!;
      expect(page.length + 2 + next.length).toBeGreaterThan(PAGE_TARGET_CHARS);
    }
    expect(pages.join('\n\n')).toBe(paragraphs.join('\n\n'));
  });

  it('breaks a paragraph longer than a page at sentence ends', () => {
    const giant = Array.from({ length: 120 }, (_, i) => sentence(i)).join(' ');
    const pages = splitTextIntoPages(`A short opening.\n\n${giant}\n\nA short ending.`);

    expect(pages.length).toBeGreaterThanOrEqual(4);
    for (const page of pages) {
      expect(page.length).toBeLessThanOrEqual(PAGE_TARGET_CHARS);
      expect(page).toMatch(/[.]$/);
    }
    expect(words(pages.join(' '))).toEqual(words(`A short opening. ${giant} A short ending.`));
  });

  it('falls back to word boundaries for a sentence longer than a page, never cutting a word', () => {
    const run = Array.from({ length: 900 }, (_, i) => `word${i}`).join(' ');
    const pages = splitTextIntoPages(run);

    expect(pages.length).toBeGreaterThan(1);
    for (const page of pages) expect(page.length).toBeLessThanOrEqual(PAGE_TARGET_CHARS);
    expect(words(pages.join(' '))).toEqual(words(run));
  });

  it('cuts a run without spaces longer than a page at the page size', () => {
    const huge = 'x'.repeat(PAGE_TARGET_CHARS + 50);
    expect(splitTextIntoPages(`before ${huge} after`)).toEqual(['before', 'x'.repeat(PAGE_TARGET_CHARS), `${'x'.repeat(50)} after`]);

    // 200,000 characters with no space were one page of 200,000.
    const blob = splitTextIntoPages('a'.repeat(200_000));
    expect(blob).toHaveLength(Math.ceil(200_000 / PAGE_TARGET_CHARS));
    for (const page of blob) expect(page.length).toBeLessThanOrEqual(PAGE_TARGET_CHARS);
    expect(blob.join('')).toBe('a'.repeat(200_000));
  });

  it('breaks CJK text after 。！？ and their closing brackets, and only there when it can', () => {
    const text = '森は暗かった。'.repeat(3_000);
    const pages = splitTextIntoPages(text);

    expect(pages.length).toBe(Math.ceil(text.length / (Math.floor(PAGE_TARGET_CHARS / 7) * 7)));
    for (const page of pages) {
      expect(page.length).toBeLessThanOrEqual(PAGE_TARGET_CHARS);
      expect(page).toMatch(/^森.*。$/u);
    }
    expect(pages.join('')).toBe(text);
    expect(splitTextIntoPages('「森は暗かった。」彼は言った！？次。', 9)).toEqual(['「森は暗かった。」', '彼は言った！？次。']);
  });

  it('never cuts between the two halves of a surrogate pair', () => {
    const pages = splitTextIntoPages(`a${'😀'.repeat(1_000)}`);
    expect(pages.map((page) => page.length)).toEqual([PAGE_TARGET_CHARS - 1, 2_001 - (PAGE_TARGET_CHARS - 1)]);
    expect(pages.join('')).toBe(`a${'😀'.repeat(1_000)}`);
  });

  it('keeps a form-feed page whole up to the longest page a book takes, and splits one past it', () => {
    const long = Array.from({ length: 80 }, (_, i) => sentence(i)).join(' ');
    expect(splitTextIntoPages(`Short.\f${long}`)).toEqual(['Short.', long]);

    const pages = splitTextIntoPages(`Short.\f${'b'.repeat(PAGE_MAX_CHARS + 1)}\fEnd.`);
    expect(pages[0]).toBe('Short.');
    expect(pages.at(-1)).toBe('End.');
    for (const page of pages.slice(1, -1)) expect(page.length).toBeLessThanOrEqual(PAGE_TARGET_CHARS);
    expect(pages.slice(1, -1).join('')).toBe('b'.repeat(PAGE_MAX_CHARS + 1));
  });

  it('holds for any text: no page over the limit, none blank, no surrogate pair split, nothing but whitespace lost', () => {
    // Pieces that exercise every rule: spaces and blank lines, form feeds, Latin and CJK
    // sentence ends, closing brackets, astral characters, combining marks, CRLF.
    const piece = fc.oneof(
      fc.constantFrom('a', 'word', 'Word.', ' ', '  ', '\n', '\n\n', '\t', '\f', '\r\n', '!', '?', '。', '！', '？', '」', '”', '森', '😀', '𝕳', 'e\u0301'),
      fc.string({ unit: 'grapheme', maxLength: 4 }),
    );
    const text = fc.array(piece, { maxLength: 400 }).map((pieces) => pieces.join(''));
    const nonSpace = (t: string) => t.replace(/\s/g, '');
    fc.assert(
      fc.property(text, fc.integer({ min: 2, max: 40 }), fc.integer({ min: 0, max: 60 }), (input, target, extra) => {
        const maxPage = target + extra;
        const pages = splitTextIntoPages(input, target, maxPage);
        const limit = input.includes('\f') ? maxPage : target;
        for (const page of pages) {
          expect(page.length).toBeLessThanOrEqual(limit);
          expect(page.trim()).toBe(page);
          expect(page.length).toBeGreaterThan(0);
          expect(page).not.toMatch(/^[\udc00-\udfff]|[\ud800-\udbff]$/);
        }
        expect(nonSpace(pages.join(''))).toBe(nonSpace(input));
      }),
      { numRuns: 3_000 },
    );
  });

  it('normalises CRLF and lone CR line endings', () => {
    const pages = splitTextIntoPages('One line\r\nsame paragraph.\r\n\r\nNext paragraph.\rStill it.');
    expect(pages).toEqual(['One line\nsame paragraph.\n\nNext paragraph.\nStill it.']);
    expect(splitTextIntoPages('a\r\n\fb')).toEqual(['a', 'b']);
  });

  it('gives no pages for empty or blank text', () => {
    expect(splitTextIntoPages('')).toEqual([]);
    expect(splitTextIntoPages(' \n\n \t \r\n ')).toEqual([]);
    expect(splitTextIntoPages('\f\f \f')).toEqual([]);
  });
});

describe('toSpreads', () => {
  it('pairs pages 1–2, 3–4, … with 1-based page numbers', () => {
    expect(toSpreads(['p1', 'p2', 'p3', 'p4'])).toEqual([
      { index: 0, firstPage: 1, lastPage: 2, text: 'p1\n\np2' },
      { index: 1, firstPage: 3, lastPage: 4, text: 'p3\n\np4' },
    ]);
  });

  it('makes an odd last page a one-page spread', () => {
    expect(toSpreads(['p1', 'p2', 'p3']).at(-1)).toEqual({ index: 1, firstPage: 3, lastPage: 3, text: 'p3' });
    expect(toSpreads(['only'])).toEqual([{ index: 0, firstPage: 1, lastPage: 1, text: 'only' }]);
  });

  it('has no spreads for no pages', () => {
    expect(toSpreads([])).toEqual([]);
  });
});
