import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, freemem, hostname, platform, release, totalmem } from 'node:os';
import { join } from 'node:path';

// What the reliability suite tried and what held, one JSON line per scenario in
// test-output/reliability/<file>.json; scripts/reliability-report.ts turns the lines of the
// latest run into RELIABILITY.md. Each test file owns one log and rewrites it when it starts.

export const RELIABILITY_OUTPUT_DIR = join(process.cwd(), 'test-output', 'reliability');

export interface MachineInfo {
  hostname: string;
  cpus: number;
  cpuModel: string;
  memoryGb: number;
  os: string;
  node: string;
}

export interface RunLine {
  kind: 'run';
  file: string;
  startedAt: string;
  machine: MachineInfo;
}

export interface ScenarioLine {
  kind: 'scenario';
  file: string;
  scenario: string;
  /** What the scenario broke on purpose. */
  broke: string;
  /** Facts that held, each with its measured numbers. */
  held: string[];
  /** The raw measurements, for the table and for anyone comparing runs. */
  measured: Record<string, number | string | boolean | null>;
  result: 'passed' | 'failed';
  error?: string;
  startedAt: string;
  durationMs: number;
}

export interface EndLine {
  kind: 'end';
  file: string;
  finishedAt: string;
  durationMs: number;
}

export type LogLine = RunLine | ScenarioLine | EndLine;

export function machineInfo(): MachineInfo {
  const list = cpus();
  return {
    hostname: hostname(),
    cpus: list.length,
    cpuModel: list[0]?.model.trim() ?? 'unknown',
    memoryGb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${platform()} ${release()}`,
    node: process.version,
  };
}

/** What a scenario body reports: facts that held and numbers it measured. */
export interface ScenarioRecorder {
  /** One fact that held, e.g. "every track terminal (12/12)". */
  held(fact: string): void;
  measure(name: string, value: number | string | boolean | null): void;
  readonly measured: Record<string, number | string | boolean | null>;
}

export interface ReliabilityLog {
  readonly file: string;
  readonly path: string;
  /**
   * Runs one scenario, recording what held, or the failure, as one line; rethrows so the
   * test fails as it would without the log.
   */
  scenario<T>(name: string, broke: string, body: (r: ScenarioRecorder) => Promise<T>): Promise<T>;
  /** Writes the closing line (call from afterAll). */
  end(): void;
}

/** Opens (and empties) the log of one test file. Call once, at the top of the file. */
export function openReliabilityLog(file: string): ReliabilityLog {
  mkdirSync(RELIABILITY_OUTPUT_DIR, { recursive: true });
  const path = join(RELIABILITY_OUTPUT_DIR, `${file}.json`);
  const started = Date.now();
  const write = (line: LogLine) => appendFileSync(path, `${JSON.stringify(line)}\n`);
  writeFileSync(path, '');
  write({ kind: 'run', file, startedAt: new Date(started).toISOString(), machine: machineInfo() });
  let ended = false;
  return {
    file,
    path,
    async scenario(name, broke, body) {
      const at = Date.now();
      const held: string[] = [];
      const measured: Record<string, number | string | boolean | null> = {};
      const recorder: ScenarioRecorder = {
        held: (fact) => void held.push(fact),
        measure: (key, value) => void (measured[key] = value),
        measured,
      };
      try {
        const value = await body(recorder);
        write({ kind: 'scenario', file, scenario: name, broke, held, measured, result: 'passed', startedAt: new Date(at).toISOString(), durationMs: Date.now() - at });
        return value;
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        write({
          kind: 'scenario', file, scenario: name, broke, held, measured, result: 'failed',
          error: message.split('\n').slice(0, 6).join('\n').slice(0, 2_000),
          startedAt: new Date(at).toISOString(), durationMs: Date.now() - at,
        });
        throw error;
      }
    },
    end() {
      if (ended) return;
      ended = true;
      write({ kind: 'end', file, finishedAt: new Date().toISOString(), durationMs: Date.now() - started });
    },
  };
}

/** Free memory now, for a scenario that wants to say how loaded the machine was. */
export const freeMemoryGb = () => Math.round((freemem() / 2 ** 30) * 10) / 10;
