import { execFileSync, spawn as spawnChild } from 'node:child_process';
import * as childProcess from 'node:child_process';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// What every benchmark shares: options, clocks (wall, this process's CPU, and the CPU of the
// child processes it has reaped), a cleanup registry that runs even when a benchmark throws,
// results files and the machine's description.

export interface BenchOptions {
  quick: boolean;
  /** Worker process counts for the scaling benchmark (--scaling-steps=1,2,4,8); default 1,2,4. */
  scalingSteps?: number[];
}

export const BENCH_DIR = dirname(dirname(fileURLToPath(import.meta.url)));
export const REPO_DIR = dirname(BENCH_DIR);
export const RESULTS_DIR = join(BENCH_DIR, 'results');

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
export const now = () => performance.now();
/** Milliseconds since the epoch with sub-millisecond precision, comparable across processes on one machine. */
export const epochMs = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------------------------------
// CPU of child processes.
//
// Linux accounts the CPU time of every child a process has waited for (reaped) in that
// process's cutime and cstime (/proc/self/stat fields 16 and 17, in clock ticks); Node's
// child_process reaps its children with waitpid as they exit, so the difference of
// cutime + cstime around a run is exactly the user + system CPU of the ffmpeg and ffprobe
// processes started (and finished) in between, grandchildren included. This is
// getrusage(RUSAGE_CHILDREN), which Node does not expose; it needs the runs it measures to
// be the only children finishing in that window, so the mixing benchmark runs them one at a
// time. Resolution is one clock tick (10 ms at CLK_TCK=100), small against runs of seconds.

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

export async function readProcStat(pid: number | 'self' = 'self'): Promise<{ utime: number; stime: number; cutime: number; cstime: number }> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may contain spaces: split after it.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14.
  const tick = ticksPerSecond();
  return {
    utime: Number(fields[11]) / tick,
    stime: Number(fields[12]) / tick,
    cutime: Number(fields[13]) / tick,
    cstime: Number(fields[14]) / tick,
  };
}

/** User + system CPU seconds of every child this process has reaped so far. */
export async function childCpuSeconds(): Promise<number> {
  const s = await readProcStat();
  return s.cutime + s.cstime;
}

/**
 * CPU seconds used so far by the machine's PostgreSQL and Redis servers. Tests on this
 * machine start and stop redis-server instances of their own, so each server is found as the
 * oldest process of its name whose parent is not of that name (the postmaster, the main
 * redis-server), and counted with its direct children: their own utime + stime, plus the
 * server's cutime + cstime (children it has reaped: backends that exited, BGSAVE forks). The
 * difference of two readings is the CPU those servers spent in between, for any client.
 */
export async function serviceCpuSeconds(): Promise<{ postgres: number; redis: number }> {
  const { readdir } = await import('node:fs/promises');
  const procs: Array<{ pid: number; ppid: number; comm: string; start: number; cpu: number; reaped: number }> = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = await readFile(`/proc/${entry}/stat`, 'utf8');
      const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      if (comm !== 'postgres' && comm !== 'redis-server') continue;
      const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
      const tick = ticksPerSecond();
      procs.push({
        pid: Number(entry),
        ppid: Number(fields[1]),
        comm,
        start: Number(fields[19]),
        cpu: (Number(fields[11]) + Number(fields[12])) / tick,
        reaped: (Number(fields[13]) + Number(fields[14])) / tick,
      });
    } catch {
      // The process ended between readdir and read.
    }
  }
  const total = (comm: string) => {
    const byPid = new Map(procs.map((p) => [p.pid, p]));
    const roots = procs.filter((p) => p.comm === comm && byPid.get(p.ppid)?.comm !== comm).sort((a, b) => a.start - b.start || a.pid - b.pid);
    const root = roots[0];
    if (!root) return 0;
    return root.cpu + root.reaped + procs.filter((p) => p.ppid === root.pid).reduce((a, p) => a + p.cpu, 0);
  };
  return { postgres: total('postgres'), redis: total('redis-server') };
}

/** A CPU meter over this process, its reaped children, PostgreSQL and Redis. */
export async function cpuMeter(): Promise<() => Promise<{ node: number; children: number; postgres: number; redis: number }>> {
  const node0 = selfCpuSeconds();
  const child0 = await childCpuSeconds();
  const svc0 = await serviceCpuSeconds();
  return async () => {
    const svc = await serviceCpuSeconds();
    return {
      node: selfCpuSeconds() - node0,
      children: (await childCpuSeconds()) - child0,
      postgres: svc.postgres - svc0.postgres,
      redis: svc.redis - svc0.redis,
    };
  };
}

/** User + system CPU seconds of this process (all its threads), excluding children. */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

// ---------------------------------------------------------------------------------------
// Counting child processes by program, without touching application code: the application
// imports `spawn` from node:child_process as an ES module binding; replacing the CommonJS
// export and calling syncBuiltinESMExports() updates that live binding.

const spawnCounts = new Map<string, number>();
let spawnPatched = false;

export function countSpawns(): void {
  if (spawnPatched) return;
  spawnPatched = true;
  const require = createRequire(import.meta.url);
  const cp = require('node:child_process') as typeof childProcess;
  const original = cp.spawn;
  cp.spawn = function patchedSpawn(this: unknown, command: string, ...rest: unknown[]) {
    const name = String(command).split('/').at(-1) ?? String(command);
    spawnCounts.set(name, (spawnCounts.get(name) ?? 0) + 1);
    return (original as (...args: unknown[]) => childProcess.ChildProcess).call(this, command, ...rest);
  } as typeof cp.spawn;
  syncBuiltinESMExports();
}

export function spawnSnapshot(): Record<string, number> {
  return Object.fromEntries(spawnCounts);
}

export function spawnDelta(before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, n] of spawnCounts) {
    const d = n - (before[name] ?? 0);
    if (d > 0) out[name] = d;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Counting this process's PostgreSQL queries and Redis commands, client side: the servers
// are shared with whatever else runs on the machine, so their own counters and CPU mix in
// other clients' work; these counts are this process's alone. pg.Client#query and
// ioredis's Redis#sendCommand (which pipelines and MULTI go through too) are wrapped; a
// pg client marked with `markUncounted` (the benchmark's own polling) is left out.

const calls = { postgres: 0, redis: 0 };
let callsPatched = false;
const UNCOUNTED = Symbol('bench-uncounted');

export async function countClientCalls(): Promise<void> {
  if (callsPatched) return;
  callsPatched = true;
  const pg = (await import('pg')).default;
  const { Redis } = await import('ioredis');
  const query = pg.Client.prototype.query;
  pg.Client.prototype.query = function countedQuery(this: { [UNCOUNTED]?: boolean }, ...args: unknown[]) {
    if (!this[UNCOUNTED]) calls.postgres += 1;
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;
  const sendCommand = Redis.prototype.sendCommand;
  Redis.prototype.sendCommand = function countedSendCommand(this: InstanceType<typeof Redis>, ...args: Parameters<typeof sendCommand>) {
    calls.redis += 1;
    return sendCommand.apply(this, args);
  };
}

/** Leaves a pool's queries out of the counts (for the benchmark's own bookkeeping). */
export function markUncounted(pool: { on(event: 'connect', fn: (client: object) => void): unknown }): void {
  pool.on('connect', (client) => {
    (client as { [UNCOUNTED]?: boolean })[UNCOUNTED] = true;
  });
}

export function clientCalls(): { postgres: number; redis: number } {
  return { ...calls };
}

// ---------------------------------------------------------------------------------------
// Cleanup that runs whatever happens: each benchmark registers what it created (databases,
// Redis prefixes, servers, child processes) as soon as it exists.

type Cleanup = { what: string; fn: () => Promise<void> | void };
const cleanups: Cleanup[] = [];

export function onCleanup(what: string, fn: () => Promise<void> | void): () => Promise<void> {
  const entry = { what, fn };
  cleanups.push(entry);
  // Calling the returned function runs this cleanup now (once) and unregisters it.
  return async () => {
    const i = cleanups.indexOf(entry);
    if (i < 0) return;
    cleanups.splice(i, 1);
    await fn();
  };
}

/** Runs every registered cleanup, newest first; reports failures and carries on. */
export async function runCleanups(): Promise<void> {
  while (cleanups.length > 0) {
    const entry = cleanups.pop()!;
    try {
      await withTimeout(Promise.resolve(entry.fn()), 20_000, `cleanup of ${entry.what}`);
    } catch (error) {
      console.error(`cleanup of ${entry.what} failed: ${(error as Error).message}`);
    }
  }
}

export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function waitUntil<T>(check: () => Promise<T> | T, options: { timeoutMs: number; intervalMs?: number; what: string }): Promise<NonNullable<T>> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.what}`);
    await sleep(options.intervalMs ?? 50);
  }
}

// ---------------------------------------------------------------------------------------
// Statistics and output.

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export const round = (value: number, digits = 2) => (Number.isFinite(value) ? Number(value.toFixed(digits)) : value);

/** One line of the summary table: a benchmark's headline figure against its target. */
export interface Headline {
  benchmark: string;
  measure: string;
  value: string;
  target: string;
  /** true met, false missed, null: no target. */
  met: boolean | null;
}

export interface BenchResult {
  name: string;
  headlines: Headline[];
  /** Everything measured, written to bench/results/<name>.json. */
  data: Record<string, unknown>;
  /** Lines printed under the table: what the figures mean. */
  notes?: string[];
}

export async function writeResult(
  result: BenchResult,
  options: BenchOptions,
  machine: Machine,
  code: CodeVersion,
  seconds: number,
  loadAverage: { before: number[]; after: number[] },
): Promise<string> {
  // A quick run (a smoke test) writes beside the full figures, never over them.
  const dir = options.quick ? join(RESULTS_DIR, 'quick') : RESULTS_DIR;
  await mkdir(dir, { recursive: true });
  const path = join(dir, `${result.name}.json`);
  const body = {
    name: result.name,
    mode: options.quick ? 'quick' : 'full',
    finishedAt: new Date().toISOString(),
    // Which code was measured, so BENCHMARKS.md can be checked against the run it quotes.
    code,
    durationSeconds: round(seconds, 1),
    machine,
    // The machine is shared: 1-minute load averages before and after say how busy it was.
    loadAverage,
    headlines: result.headlines,
    notes: result.notes ?? [],
    ...result.data,
  };
  await writeFile(path, `${JSON.stringify(body, null, 2)}\n`);
  return path;
}

export function printTable(rows: Headline[]): void {
  const header: Headline = { benchmark: 'benchmark', measure: 'measure', value: 'value', target: 'target', met: null };
  const cells = (r: Headline) => [r.benchmark, r.measure, r.value, r.target, r === header ? 'met' : r.met === null ? '' : r.met ? 'yes' : 'NO'];
  const all = [header, ...rows].map(cells);
  const widths = all[0]!.map((_, i) => Math.max(...all.map((row) => row[i]!.length)));
  const line = (row: string[]) => row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  console.log(line(all[0]!));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of all.slice(1)) console.log(line(row));
}

export interface Machine {
  nproc: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  platform: string;
  ffmpeg: string;
  redis: string;
  postgres: string;
}

export async function describeMachine(): Promise<Machine> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? 'unknown';
  const tool = (cmd: string, args: string[], pattern: RegExp) => {
    try {
      const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      return pattern.exec(out)?.[1] ?? out.split('\n')[0]!.trim();
    } catch {
      return 'unknown';
    }
  };
  return {
    nproc: Number(tool('nproc', [], /(\d+)/)) || cpus().length,
    cpuModel: model,
    memoryGiB: round(totalmem() / 2 ** 30, 1),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    ffmpeg: tool('ffmpeg', ['-hide_banner', '-version'], /ffmpeg version (\S+)/),
    redis: tool('redis-server', ['--version'], /v=(\S+)/),
    postgres: tool('psql', ['--version'], /(\d+\.\d+)/),
  };
}

export interface CodeVersion {
  commit: string;
  /** Whether the work tree had changes on top of the commit (bench/results aside). */
  modified: boolean;
}

/** The checked-out commit, and whether the work tree had changes on top of it. */
export function codeVersion(): CodeVersion {
  const git = (args: string[]) => execFileSync('git', args, { cwd: REPO_DIR, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    // bench/results is what the run itself writes: not a change to the code measured.
    return { commit: git(['rev-parse', '--short', 'HEAD']), modified: git(['status', '--porcelain', '--', '.', ':!bench/results']) !== '' };
  } catch {
    // A copy without its git metadata (an exported tarball) still runs the benchmarks.
    return { commit: 'unknown', modified: false };
  }
}

/** Runs a command to completion (no shell), rejecting with its stderr on failure. */
export function run(command: string, args: string[], options: { cwd?: string } = {}): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawnChild(command, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve({ stdout, stderr }) : reject(new Error(`${command} exited ${code}: ${stderr.slice(-2000)}`))));
  });
}
