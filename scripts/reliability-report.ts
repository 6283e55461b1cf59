// Turns the reliability suite's own output (test-output/reliability/*.json, one JSON line per
// scenario, written by tests/helpers/reliability-log.ts) into RELIABILITY.md: what was
// broken, what held with the numbers measured, and the result, plus when and where it ran.
//
//   npx vitest run tests/reliability && npx tsx scripts/reliability-report.ts
//
// Options: --in <dir> (default test-output/reliability), --out <file> (default RELIABILITY.md).
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EndLine, LogLine, RunLine, ScenarioLine } from '../tests/helpers/reliability-log';

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1]! : fallback;
};
const inDir = option('--in', join(process.cwd(), 'test-output', 'reliability'));
const outFile = option('--out', join(process.cwd(), 'RELIABILITY.md'));

// The order the issue lists them in; files not listed here come after, alphabetically.
const ORDER = ['killed-workers', 'redis-lost', 'postgres-restarted', 'provider-faults', 'bad-input', 'strangers', 'graceful-shutdown', 'load'];
const TITLES: Record<string, string> = {
  'killed-workers': 'Killed workers',
  'redis-lost': 'Redis lost',
  'postgres-restarted': 'PostgreSQL restarted',
  'provider-faults': 'Provider faults',
  'bad-input': 'Bad input',
  strangers: 'Other users and strangers',
  'graceful-shutdown': 'Graceful shutdown',
  load: 'Load',
};

interface FileRun {
  file: string;
  run?: RunLine;
  scenarios: ScenarioLine[];
  end?: EndLine;
}

function readRuns(): FileRun[] {
  if (!existsSync(inDir)) throw new Error(`${inDir} does not exist: run \`npx vitest run tests/reliability\` first`);
  const runs: FileRun[] = [];
  for (const name of readdirSync(inDir).filter((f) => f.endsWith('.json')).sort()) {
    const run: FileRun = { file: name.replace(/\.json$/, ''), scenarios: [] };
    for (const line of readFileSync(join(inDir, name), 'utf8').split('\n')) {
      if (!line.trim()) continue;
      const parsed = JSON.parse(line) as LogLine;
      if (parsed.kind === 'run') run.run = parsed;
      else if (parsed.kind === 'scenario') run.scenarios.push(parsed);
      else if (parsed.kind === 'end') run.end = parsed;
    }
    runs.push(run);
  }
  const rank = (f: string) => (ORDER.includes(f) ? ORDER.indexOf(f) : ORDER.length);
  return runs.sort((a, b) => rank(a.file) - rank(b.file) || a.file.localeCompare(b.file));
}

/** Text safe inside a Markdown table cell. */
const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\r?\n/g, '<br>').replace(/</g, '&lt;').replace(/&lt;br>/g, '<br>');

const seconds = (ms: number) => (ms >= 60_000 ? `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s` : `${(ms / 1000).toFixed(1)} s`);

function version(command: string, args: string[], pattern: RegExp): string {
  try {
    const out = execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return pattern.exec(out)?.[1] ?? out.split('\n')[0]!.trim();
  } catch {
    return 'not found';
  }
}

function render(runs: FileRun[]): string {
  const scenarios = runs.flatMap((r) => r.scenarios);
  const passed = scenarios.filter((s) => s.result === 'passed').length;
  const failed = scenarios.length - passed;
  const incomplete = runs.filter((r) => !r.end).map((r) => r.file);
  const starts = runs.map((r) => Date.parse(r.run?.startedAt ?? '')).filter(Number.isFinite);
  const ends = runs.map((r) => Date.parse(r.end?.finishedAt ?? '')).filter(Number.isFinite);
  const first = Math.min(...starts);
  const last = Math.max(...ends, ...scenarios.map((s) => Date.parse(s.startedAt) + s.durationMs));
  const machine = runs.find((r) => r.run)?.run?.machine;
  const lines: string[] = [];
  lines.push('# Reliability and security');
  lines.push('');
  lines.push('What the reliability suite (`tests/reliability/`) broke on purpose, and what held. Each scenario runs');
  lines.push('real worker and API processes against real Redis, PostgreSQL and ffmpeg, with the provider fakes of');
  lines.push('`tests/fakes/` speaking the OpenAI, Gemini and Replicate wire formats, and checks the invariants of');
  lines.push('`../shared/DESIGN.md` afterwards. This file is generated from the suite\'s own output; do not edit it:');
  lines.push('');
  lines.push('```sh');
  lines.push('npx vitest run tests/reliability          # writes test-output/reliability/<file>.json');
  lines.push('npx tsx scripts/reliability-report.ts     # writes this file from them');
  lines.push('```');
  lines.push('');
  lines.push('## Latest run');
  lines.push('');
  lines.push(`- **Date:** ${new Date(first).toISOString().replace('T', ' ').slice(0, 19)} – ${new Date(last).toISOString().slice(11, 19)} UTC`);
  lines.push(`- **Result:** ${passed} of ${scenarios.length} scenarios held${failed ? `, **${failed} failed**` : ''}${incomplete.length ? ` (incomplete logs: ${incomplete.join(', ')})` : ''}`);
  lines.push(`- **Time:** ${seconds(last - first)} from the first file's start to the last file's end (vitest runs two files at a time)`);
  if (machine) {
    lines.push(`- **Machine:** ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGb} GB RAM, ${machine.os}, Node ${machine.node} (host ${machine.hostname})`);
  }
  lines.push(
    `- **Services:** Redis ${version('redis-server', ['--version'], /v=(\S+)/)}, PostgreSQL ${version('psql', ['--version'], /(\d+\.\d+)/)}, ffmpeg ${version('ffmpeg', ['-version'], /ffmpeg version (\S+)/)}`,
  );
  lines.push('');
  lines.push('| Area | Scenario | What was broken | What held (measured) | Result |');
  lines.push('| --- | --- | --- | --- | --- |');
  for (const run of runs) {
    for (const s of run.scenarios) {
      const measured = Object.entries(s.measured).map(([k, v]) => `${k}: ${v}`).join('; ');
      const held = [...s.held.map((h) => `• ${h}`), ...(measured ? [`*${measured}*`] : []), ...(s.error ? [`**failed:** ${s.error}`] : [])].join('\n');
      lines.push(`| ${cell(TITLES[run.file] ?? run.file)} | ${cell(s.scenario)} | ${cell(s.broke)} | ${cell(held)} | ${s.result === 'passed' ? 'held' : '**FAILED**'} (${seconds(s.durationMs)}) |`);
    }
  }
  lines.push('');
  lines.push('## Per file');
  lines.push('');
  lines.push('| File | Scenarios | Held | Duration | Started (UTC) |');
  lines.push('| --- | --- | --- | --- | --- |');
  for (const run of runs) {
    const held = run.scenarios.filter((s) => s.result === 'passed').length;
    lines.push(`| \`tests/reliability/${run.file}.test.ts\` | ${run.scenarios.length} | ${held} | ${run.end ? seconds(run.end.durationMs) : 'incomplete'} | ${run.run?.startedAt.slice(11, 19) ?? '?'} |`);
  }
  lines.push('');
  lines.push('## Defects this suite found (fixed in the application)');
  lines.push('');
  for (const finding of FINDINGS) lines.push(`- ${finding}`);
  lines.push('');
  lines.push('## Seen, not changed');
  lines.push('');
  for (const observation of OBSERVATIONS) lines.push(`- ${observation}`);
  lines.push('');
  return lines.join('\n');
}

// Kept by hand: what the scenarios above exposed when they were first written, and the fix.
const FINDINGS = [
  '**A killed worker blocked its voices for 3 minutes** (killed workers): a voice rendition claim was a fixed 3-minute lease, so after a SIGKILL mid-synthesis every track needing that voice waited 3 minutes whatever `WORKER_LOCK_DURATION_MS` said (the batch stalled past the 90 s the test allows). The claim is now renewed by its holder and its lease is the worker lock duration (`apps/worker/src/speech/rendition.ts`).',
  '**Redis restarted empty stopped the reconciler for good** (Redis lost): its BullMQ job scheduler lives in Redis, so it vanished with everything else and nothing re-enqueued the lost batch or book until a worker restarted. The process running the maintenance queue now puts a missing schedule back every `RECONCILE_INTERVAL_MS` (`apps/worker/src/reconciler.ts`, `apps/worker/src/workers.ts`).',
  '**NUL characters and unpaired surrogates answered 500** (bad input): PostgreSQL text/jsonb cannot store U+0000 and jsonb refuses lone surrogates, so such strings in any JSON field (vision id, section text, book title or pages, webhook URL) or list query failed the insert. `validate()` now answers 400 naming the field (`apps/api/src/http-errors.ts`).',
  '**A malformed multipart body answered 500** (bad input): busboy\'s parse errors ("Malformed part header") carry no status. Uploads that cannot be parsed now answer 400 `invalid_upload` (`apps/api/src/books/book-input.ts`).',
  '**A PostgreSQL restart could kill a worker or API process** (PostgreSQL restarted): a pooled client checked out inside a transaction has no pool listener, so when the server went away `pg` emitted an unhandled `error` event and the process exited (a worker vanished mid-outage in one suite run; the transaction scenario reproduces it every time). `createDb` now gives every client a listener; the transaction still fails and its job is retried (`packages/shared/src/db/client.ts`).',
  '**A burst of requests answered 500 after 5 s in the pool\'s queue** (load): pg-pool used `connectionTimeoutMillis` (5 s) both to open a connection and to wait for a free one, so on a busy machine the tail of 200 concurrent creations got "timeout exceeded when trying to connect" → 500 (70 of 200 in one run). Opening a connection still fails after 5 s; waiting for a pooled one now allows 30 s (`packages/shared/src/db/client.ts`). The "slow database" scenario reproduces it every time.',
  '**A job that failed on a database outage showed SQL as its reason** (PostgreSQL restarted): drizzle reports a failed query as "Failed query: <SQL> params: …" with the cause (`connect ECONNREFUSED`, "terminating connection due to administrator command") only in `error.cause`, so Bull Board showed SQL. A failed query is now a retryable `DatabaseError` saying "a database query failed: <cause>" in the job\'s failure reason and any track message (`packages/shared/src/errors.ts`, `apps/worker/src/workers.ts`; `tests/foundation/database-errors.test.ts`).',
  '**Routes answered 500 while PostgreSQL was down** (PostgreSQL restarted): only `/readyz` said 503. A store that is unreachable (connection refused or reset, the server shutting down, the pool unable to connect) now answers `503 service_unavailable` with `Retry-After: 5` on every route (`apps/api/src/http-errors.ts`).',
];

// Also kept by hand: what the suite showed that was left as it is, for a later decision.
const OBSERVATIONS = [
  'A failed transaction\'s rejection can read "Failed query: rollback" (drizzle\'s rollback failed on the dead connection and replaced the original error).',
];

const runs = readRuns();
if (runs.length === 0) throw new Error(`no reliability logs in ${inDir}`);
writeFileSync(outFile, render(runs));
const total = runs.flatMap((r) => r.scenarios);
console.log(`${outFile}: ${total.filter((s) => s.result === 'passed').length}/${total.length} scenarios held, from ${runs.length} files`);
