import { describe, expect, it } from 'vitest';
import { PAGE_TARGET_CHARS, splitTextIntoPages, toSpreads } from '@soundqueue/shared/pages';

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

  it('lets a single word longer than a page stand alone', () => {
    const huge = 'x'.repeat(PAGE_TARGET_CHARS + 50);
    expect(splitTextIntoPages(`before ${huge} after`)).toEqual(['before', huge, 'after']);
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
