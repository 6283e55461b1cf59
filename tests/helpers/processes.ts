import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

// Real worker and API processes for tests that kill, stop or overload them: the same entry
// points as `npm run start:worker` / `start:api`, with the test's environment. Each process
// logs JSON lines (pino) on stdout; readiness is the "worker started" / "api listening" line,
// so no test sleeps for a process to come up.

export interface LogRecord {
  level?: number;
  msg?: string;
  [key: string]: unknown;
}

export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly name: string;
  /** Resolves once the process said it is ready; rejects if it exits first. */
  readonly ready: Promise<void>;
  /** Resolves with how the process ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The latest JSON log lines (up to 5,000; non-JSON output as { msg }). */
  readonly logs: LogRecord[];
  /** How many lines with this msg the process has logged since it started (never trimmed). */
  count(msg: string): number;
  readonly stderr: string[];
  alive(): boolean;
  /** Sends a signal and waits for the process to end. */
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The log lines at level error (50) or above, and stderr that is not a warning. */
  errors(): string[];
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  // A test that failed before its cleanup must not leave workers running on the machine.
  for (const child of running) child.kill('SIGKILL');
});

function start(name: string, entry: string, env: Record<string, string>, readyMessage: string): ServiceProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', entry], {
    env: { ...process.env, ...env, LOG_LEVEL: env.SERVICE_LOG_LEVEL ?? 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const logs: LogRecord[] = [];
  const counts = new Map<string, number>();
  const stderr: string[] = [];
  let onReady: () => void = () => {};
  let buffer = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    buffer += chunk;
    let cut: number;
    while ((cut = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 1);
      if (!line.trim()) continue;
      let record: LogRecord;
      try {
        record = JSON.parse(line) as LogRecord;
      } catch {
        record = { msg: line };
      }
      logs.push(record);
      if (typeof record.msg === 'string') counts.set(record.msg, (counts.get(record.msg) ?? 0) + 1);
      if (logs.length > 5_000) logs.splice(0, 1_000);
      if (record.msg === readyMessage) onReady();
    }
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => {
    stderr.push(chunk);
    if (stderr.length > 500) stderr.splice(0, 100);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  const ready = new Promise<void>((resolve, reject) => {
    onReady = resolve;
    void exited.then(({ code, signal }) =>
      reject(new Error(`${name} (pid ${child.pid}) exited (${code ?? signal}) before it was ready:\n${stderr.join('').slice(-2_000)}\n${logs.slice(-10).map((l) => JSON.stringify(l)).join('\n')}`)),
    );
  });
  // Nobody may be waiting for `ready` when a process is killed on purpose.
  ready.catch(() => {});
  return {
    child,
    pid: child.pid!,
    name,
    ready,
    exited,
    logs,
    count: (msg) => counts.get(msg) ?? 0,
    stderr,
    alive: () => child.exitCode === null && child.signalCode === null,
    async kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    errors() {
      return [
        ...logs.filter((l) => (l.level ?? 0) >= 50).map((l) => JSON.stringify(l)),
        ...stderr.join('').split('\n').filter((l) => /error/i.test(l) && !/warn/i.test(l)),
      ];
    },
  };
}

/** A worker process (`apps/worker/src/main.ts`) with the test's env; WORKER_QUEUES etc. from env. */
export function spawnWorker(env: Record<string, string>, name = 'worker'): ServiceProcess {
  return start(name, 'apps/worker/src/main.ts', env, 'worker started');
}

/** An API process (`apps/api/src/main.ts`); give it a PORT from freePort(). */
export function spawnApi(env: Record<string, string>, name = 'api'): ServiceProcess {
  return start(name, 'apps/api/src/main.ts', env, 'api listening');
}

/** `npm start`'s process (`scripts/start.ts`: the API and every worker in one); give it a PORT from freePort(). */
export function spawnAllInOne(env: Record<string, string>, name = 'soundqueue'): ServiceProcess {
  return start(name, 'scripts/start.ts', env, 'soundqueue started');
}

/** A TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Ends every given process that is still running (SIGKILL), and waits for them. */
export async function killAll(processes: Iterable<ServiceProcess | undefined>): Promise<void> {
  await Promise.all([...processes].filter((p): p is ServiceProcess => Boolean(p)).map((p) => p.kill('SIGKILL')));
}
