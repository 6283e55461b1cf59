import { api } from './api';
import { book } from './book';
import { mixing } from './mixing';
import { rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { orchestration } from './orchestration';
import { scaling } from './scaling';
import { benchMemory } from './memory';
import {
  codeVersion, describeMachine, now, printTable, round, runCleanups, writeResult,
  type BenchOptions, type BenchResult, type Headline,
} from './lib/common';

// npm run bench [-- --quick] [--only=orchestration,mixing] [--scaling-steps=1,2,4,8]
// Runs every benchmark one after another (never two at once: they share two cores), prints
// one table and writes bench/results/<name>.json. Cleanup (databases, Redis prefixes,
// servers, child processes) runs after each benchmark, and on failure or Ctrl-C.

const benchmarks: Record<string, (options: BenchOptions) => Promise<BenchResult>> = {
  orchestration,
  book,
  mixing,
  api,
  scaling,
  memory: benchMemory,
};

const args = process.argv.slice(2);
const steps = args.find((a) => a.startsWith('--scaling-steps='))?.slice('--scaling-steps='.length).split(',').map(Number);
if (steps && (steps.length === 0 || steps.some((n) => !Number.isInteger(n) || n < 1) || steps.some((n, i) => i > 0 && n <= steps[i - 1]!))) {
  console.error('--scaling-steps wants increasing process counts, e.g. --scaling-steps=1,2,4,8');
  process.exit(2);
}
const options: BenchOptions = { quick: args.includes('--quick'), ...(steps ? { scalingSteps: steps } : {}) };
const only = args.find((a) => a.startsWith('--only='))?.slice('--only='.length).split(',').filter(Boolean);
const selected = Object.keys(benchmarks).filter((name) => !only || only.includes(name));
if (only) {
  const unknown = only.filter((name) => !(name in benchmarks));
  if (unknown.length > 0) {
    console.error(`unknown benchmark(s): ${unknown.join(', ')}; known: ${Object.keys(benchmarks).join(', ')}`);
    process.exit(2);
  }
}

let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(`\n${signal}: cleaning up…`);
    void runCleanups().finally(() => process.exit(130));
  });
}

const machine = await describeMachine();
const code = codeVersion();
console.log(`soundqueue benchmarks (${options.quick ? 'quick' : 'full'}): ${selected.join(', ')}`);
console.log(`code: ${code.commit}${code.modified ? ' with uncommitted changes' : ''}`);
console.log(`machine: ${machine.nproc} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node}, ffmpeg ${machine.ffmpeg}\n`);

const started = now();
const headlines: Headline[] = [];
const notes: string[] = [];
const failures: string[] = [];
for (const name of selected) {
  const t0 = now();
  const loadBefore = loadavg().map((v) => round(v, 2));
  process.stdout.write(`${name}… `);
  try {
    const result = await benchmarks[name]!(options);
    const seconds = (now() - t0) / 1000;
    await writeResult(result, options, machine, code, seconds, { before: loadBefore, after: loadavg().map((v) => round(v, 2)) });
    headlines.push(...result.headlines);
    notes.push(...(result.notes ?? []).map((n) => `[${name}] ${n}`));
    console.log(`${round(seconds, 1)} s (load average ${loadBefore[0]} → ${round(loadavg()[0]!, 2)})`);
  } catch (error) {
    failures.push(`${name}: ${(error as Error).stack ?? String(error)}`);
    headlines.push({ benchmark: name, measure: 'FAILED', value: (error as Error).message.slice(0, 80), target: '', met: false });
    console.log('failed');
  } finally {
    await runCleanups();
  }
}

// The in-process workers' scratch directory (createWorkerContext: <tmp>/soundqueue-<pid>).
await rm(join(tmpdir(), `soundqueue-${process.pid}`), { recursive: true, force: true });

console.log('');
printTable(headlines);
if (notes.length > 0) console.log(`\n${notes.join('\n')}`);
console.log(`\ntotal ${round((now() - started) / 1000, 1)} s; results in bench/results/${options.quick ? 'quick/' : ''}`);
if (failures.length > 0) {
  console.error(`\n${failures.join('\n\n')}`);
  process.exitCode = 1;
}
// Stray handles (a library's timer) must not keep the process alive after the report.
setTimeout(() => process.exit(process.exitCode ?? 0), 200).unref();
