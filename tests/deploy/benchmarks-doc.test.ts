import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { BEGIN, BENCHMARKS_DOC, END, figures, withFigures } from '../../bench/report';

// BENCHMARKS.md quotes the results files the last committed runs wrote, not figures copied by
// hand: a results file changed without the document (or the other way round) fails here.
// After a benchmark run: `npx tsx bench/report.ts --write`, or `git checkout bench/results`
// to keep the figures the document quotes.

describe('BENCHMARKS.md', () => {
  it('quotes exactly the figures in bench/results', async () => {
    const doc = await readFile(BENCHMARKS_DOC, 'utf8');
    const body = await figures();
    const section = doc.slice(doc.indexOf(BEGIN), doc.indexOf(END) + END.length);
    expect(section).toBe(body);
  });

  it('replaces only the figures section when written', () => {
    const doc = `before\n${BEGIN}\nold\n${END}\nafter\n`;
    expect(withFigures(doc, `${BEGIN}\nnew\n${END}`)).toBe(`before\n${BEGIN}\nnew\n${END}\nafter\n`);
    expect(() => withFigures('no markers', 'x')).toThrow(/no figures section/);
  });
});
