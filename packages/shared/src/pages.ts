// A book's text as the page-flip reader shows it: pages, then 2-page spreads.

/** Pages of plain text are cut near this many characters (the seed's page size). */
export const PAGE_TARGET_CHARS = 1800;

/** The longest page a book takes: a JSON page over it is refused, a form-feed page over it split. */
export const PAGE_MAX_CHARS = 50_000;

export interface Spread {
  /** 0-based. */
  index: number;
  /** 1-based page numbers, inclusive. */
  firstPage: number;
  lastPage: number;
  text: string;
}

/**
 * Form feeds are the author's own page breaks, so they win when present (a form-feed page
 * longer than `maxPageChars` is split like text without them). Otherwise pages are packed
 * from whole paragraphs up to `targetChars`; a paragraph longer than a page is broken at
 * sentence ends, a sentence longer than a page at spaces, and a run without spaces longer
 * than a page (CJK text, a pasted blob) after 。！？ where it can, else at the page size, never
 * between the two halves of a surrogate pair. So no page is longer than `targetChars`, and
 * only whitespace is lost.
 */
export function splitTextIntoPages(text: string, targetChars = PAGE_TARGET_CHARS, maxPageChars = PAGE_MAX_CHARS): string[] {
  const normalised = text.replace(/\r\n?/g, '\n');
  if (normalised.includes('\f')) {
    return normalised
      .split('\f')
      .map((page) => page.trim())
      .flatMap((page) => (page.length <= maxPageChars ? [page] : splitParagraphs(page, targetChars)))
      .filter((page) => page.length > 0);
  }
  return splitParagraphs(normalised, targetChars);
}

function splitParagraphs(text: string, targetChars: number): string[] {
  const paragraphs = text
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

// CJK sentences end at 。！？ (or halfwidth ｡), optionally followed by closing quotes or
// brackets, with no space after them: the break is the empty string after the last of them
// ("！？」" stays whole).
const CJK_SENTENCE_END = /(?<=[。！？｡][。！？｡」』）〕】〉》"”’')\]]*)(?![。！？｡」』）〕】〉》"”’')\]])/u;

function breakParagraph(paragraph: string, limit: number): string[] {
  if (paragraph.length <= limit) return [paragraph];
  const sentences = paragraph.split(SENTENCE_BREAK).filter(Boolean);
  const units = sentences.flatMap((sentence) =>
    sentence.length <= limit ? [sentence] : pack(sentence.split(/\s+/).filter(Boolean).flatMap((word) => breakRun(word, limit)), ' ', limit),
  );
  return pack(units, ' ', limit);
}

/**
 * A run without whitespace longer than a page, in pieces of at most `limit` joined by ''
 * (nothing is lost or added). Each piece but the last is packed full, so two of them never fit
 * on one page together and the callers' space-joined packing keeps them apart.
 */
function breakRun(run: string, limit: number): string[] {
  if (run.length <= limit) return [run];
  const sentences = run.split(CJK_SENTENCE_END).filter(Boolean);
  return pack(
    sentences.flatMap((sentence) => (sentence.length <= limit ? [sentence] : cutAt(sentence, limit))),
    '',
    limit,
  );
}

/** Slices of `limit` UTF-16 units, one shorter where the cut would split a surrogate pair. */
function cutAt(text: string, limit: number): string[] {
  const slices: string[] = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(start + limit, text.length);
    if (end < text.length && end - 1 > start && isHighSurrogate(text.charCodeAt(end - 1)) && isLowSurrogate(text.charCodeAt(end))) end -= 1;
    slices.push(text.slice(start, end));
    start = end;
  }
  return slices;
}

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff;
const isLowSurrogate = (code: number) => code >= 0xdc00 && code <= 0xdfff;

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
