// A book's text as the page-flip reader shows it: pages, then 2-page spreads.

/** Pages of plain text are cut near this many characters (the seed's page size). */
export const PAGE_TARGET_CHARS = 1800;

export interface Spread {
  /** 0-based. */
  index: number;
  /** 1-based page numbers, inclusive. */
  firstPage: number;
  lastPage: number;
  text: string;
}

/**
 * Form feeds are the author's own page breaks, so they win when present. Otherwise pages are
 * packed from whole paragraphs up to `targetChars`; a paragraph longer than a page is broken at
 * sentence ends, and a sentence longer than a page at spaces, so no word is ever cut (a single
 * word longer than a page stands alone rather than being split).
 */
export function splitTextIntoPages(text: string, targetChars = PAGE_TARGET_CHARS): string[] {
  const normalised = text.replace(/\r\n?/g, '\n');
  if (normalised.includes('\f')) {
    return normalised
      .split('\f')
      .map((page) => page.trim())
      .filter((page) => page.length > 0);
  }
  const paragraphs = normalised
    .split(/\n[ \t]*\n/)
    .map((paragraph) => paragraph.trim())
    .filter((paragraph) => paragraph.length > 0);
  // Pieces of one oversized paragraph never share a page (each is packed full), so joining
  // every unit with a blank line only ever separates real paragraphs.
  const units = paragraphs.flatMap((paragraph) => breakParagraph(paragraph, targetChars));
  return pack(units, '\n\n', targetChars);
}

/** Pages 1–2, 3–4, …; an odd last page is a spread on its own. */
export function toSpreads(pages: readonly string[]): Spread[] {
  const spreads: Spread[] = [];
  for (let i = 0; i < pages.length; i += 2) {
    const pair = pages.slice(i, i + 2);
    spreads.push({
      index: i / 2,
      firstPage: i + 1,
      lastPage: i + pair.length,
      text: pair.join('\n\n'),
    });
  }
  return spreads;
}

// A sentence ends at . ! ? or … (optionally followed by closing quotes or brackets) and a space.
const SENTENCE_BREAK = /(?<=[.!?…]["'”’)\]]*)\s+/u;

function breakParagraph(paragraph: string, limit: number): string[] {
  if (paragraph.length <= limit) return [paragraph];
  const sentences = paragraph.split(SENTENCE_BREAK).filter(Boolean);
  const units = sentences.flatMap((sentence) =>
    sentence.length <= limit ? [sentence] : pack(sentence.split(/\s+/).filter(Boolean), ' ', limit),
  );
  return pack(units, ' ', limit);
}

/** Greedy: each chunk takes units while it stays within `limit`. */
function pack(units: readonly string[], separator: string, limit: number): string[] {
  const chunks: string[] = [];
  let current = '';
  for (const unit of units) {
    if (!current) current = unit;
    else if (current.length + separator.length + unit.length <= limit) current += separator + unit;
    else {
      chunks.push(current);
      current = unit;
    }
  }
  if (current) chunks.push(current);
  return chunks;
}
