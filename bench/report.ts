import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPO_DIR, RESULTS_DIR, type Headline } from './lib/common';

// The figures table of BENCHMARKS.md, made from the results files the last runs wrote
// (bench/results/*.json for the full run, bench/results/quick/*.json for the quick one), so the
// document quotes exactly what was measured and by which commit. tests/deploy/benchmarks-doc.test.ts
// checks that the table in the document is this one.
//
//   npx tsx bench/report.ts           prints the table
//   npx tsx bench/report.ts --write   puts it into BENCHMARKS.md between its markers

export const BENCHMARKS_DOC = join(REPO_DIR, 'BENCHMARKS.md');
export const BEGIN = '<!-- figures: made by `npx tsx bench/report.ts --write` from bench/results; do not edit by hand -->';
export const END = '<!-- end of figures -->';

/** The order of the benchmarks in the issue, then the maintainers' memory benchmark. */
const ORDER = ['orchestration', 'book', 'mixing', 'api', 'scaling', 'memory'];

interface ResultFile {
  name: string;
  finishedAt: string;
  durationSeconds: number;
  code?: { commit: string; modified: boolean };
  machine: { nproc: number; cpuModel: string; memoryGiB: number; node: string; ffmpeg: string; redis: string; postgres: string };
  headlines: Headline[];
}

async function readResults(dir: string): Promise<ResultFile[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.json'));
  const files = await Promise.all(names.map(async (n) => JSON.parse(await readFile(join(dir, n), 'utf8')) as ResultFile));
  return files.sort((a, b) => ORDER.indexOf(a.name) - ORDER.indexOf(b.name));
}

/** One run as the document states it: when, which code, how long. */
function runLine(label: string, files: ResultFile[]): string {
  const times = files.map((f) => f.finishedAt).sort();
  const commits = [...new Set(files.map((f) => (f.code ? `${f.code.commit}${f.code.modified ? ' with uncommitted changes' : ''}` : 'commit not recorded')))];
  const seconds = files.reduce((sum, f) => sum + f.durationSeconds, 0);
  const [first, last] = [times[0]!, times.at(-1)!];
  const span = first.slice(0, 16) === last.slice(0, 16) ? `${first.slice(0, 10)} ${first.slice(11, 16)}` : first.slice(0, 10) === last.slice(0, 10) ? `${first.slice(0, 10)} ${first.slice(11, 16)}–${last.slice(11, 16)}` : `${first.slice(0, 16)}–${last.slice(0, 16)}`.replaceAll('T', ' ');
  return `${label}: ${files.length} benchmarks finished ${span} UTC (${Math.round(seconds * 10) / 10} s in all), code ${commits.join(', ')}.`;
}

const cell = (text: string) => text.replaceAll('|', '\\|');

function table(files: ResultFile[]): string[] {
  const rows = ['| benchmark | measure | figure | target | met |', '| --- | --- | --- | --- | --- |'];
  for (const file of files) {
    for (const h of file.headlines) {
      const met = h.met === null ? '' : h.met ? 'yes' : '**no**';
      rows.push(`| ${cell(h.benchmark)} | ${cell(h.measure)} | ${cell(h.value)} | ${cell(h.target)} | ${met} |`);
    }
  }
  return rows;
}

/** The figures section's body: the full run's table, then the quick run's. */
export async function figures(): Promise<string> {
  const full = await readResults(RESULTS_DIR);
  const quick = await readResults(join(RESULTS_DIR, 'quick'));
  const m = full[0]!.machine;
  return [
    BEGIN,
    '',
    runLine('Full run (`npm run bench`)', full),
    `Machine: ${m.nproc} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}, ffmpeg ${m.ffmpeg}, Redis ${m.redis}, PostgreSQL ${m.postgres}.`,
    '',
    ...table(full),
    '',
    runLine('Quick run (`npm run bench -- --quick`; indicative only, targets judged on the full run)', quick),
    '',
    ...table(quick),
    '',
    END,
  ].join('\n');
}

/** The document with its figures section replaced by `body`. */
export function withFigures(doc: string, body: string): string {
  const start = doc.indexOf(BEGIN);
  const end = doc.indexOf(END);
  if (start < 0 || end < start) throw new Error(`BENCHMARKS.md has no figures section (${BEGIN} … ${END})`);
  return doc.slice(0, start) + body + doc.slice(end + END.length);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const body = await figures();
  if (process.argv.includes('--write')) {
    await writeFile(BENCHMARKS_DOC, withFigures(await readFile(BENCHMARKS_DOC, 'utf8'), body));
    console.log('BENCHMARKS.md: figures section written from bench/results');
  } else {
    console.log(body);
  }
}
