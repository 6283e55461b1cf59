import { createServer, type Server, type Socket } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorkerContext, selectQueues, startWorkers, type RunningWorkers, type WorkerContext } from '@soundqueue/worker';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { freePort } from '../helpers/processes';

// A worker process stopped while its workers are still starting (a SIGTERM right after start,
// a deploy rolled back, a test's short-lived worker). Each BullMQ Worker starts two Redis
// connections, and Worker.close() stops listening for their 'error' event; a start that fails
// after that (the connection closed while its start still waited for Redis or for its INFO)
// reported on an event nobody listened for, which throws: an unhandled rejection, which ends a
// Node process (exit 1 instead of 0 on SIGTERM). "Connection is closed." is what vitest's
// config lets pass as a teardown artifact, so the test counts them itself.
let env: TestEnv;

beforeAll(async () => {
  env = await createTestEnv();
});
afterAll(async () => {
  await env?.cleanup();
});

/** Unhandled rejections and uncaught exceptions while `run` runs and for a few turns after. */
async function unhandledDuring(run: () => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  const onRejection = (reason: unknown) => seen.push(`unhandledRejection: ${reason instanceof Error ? reason.message : String(reason)}`);
  const onException = (error: Error) => seen.push(`uncaughtException: ${error.message}`);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  try {
    await run();
    // A rejection is reported a few turns after the promise that caused it.
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  }
  return seen;
}

/** close() of workers and context, failing if it does not resolve within a bound. */
async function closeWithin(ms: number, running: RunningWorkers, ctx: WorkerContext): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`close() did not resolve within ${ms} ms`)), ms);
  });
  try {
    await Promise.race([(async () => {
      await running.close();
      await ctx.close();
    })(), late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('workers closed while their Redis connections are still connecting', () => {
  it('Redis reachable, workers not yet started: no unhandled error, close resolves', async () => {
    const seen = await unhandledDuring(async () => {
      // Each round's late failures surface while the next round starts (it talks to Redis and
      // PostgreSQL), so all but the last round's are seen for certain.
      for (let i = 0; i < 24; i++) {
        const ctx = await createWorkerContext(env.config);
        const running = await startWorkers(ctx, selectQueues(undefined));
        // Closed at once or a few turns later: the connections connecting, then sending INFO.
        for (let turn = 0; turn < i % 8; turn++) await new Promise((resolve) => setImmediate(resolve));
        await closeWithin(20_000, running, ctx);
      }
    });
    expect(seen).toEqual([]);
  });

  it('Redis reachable, workers closed just after they started: no error logged', async () => {
    // A SIGTERM right after start (tests/ops/stop-while-starting.test.ts met it on a loaded
    // machine): Worker.close() closes a blocking connection whose start is still under way,
    // the worker's run fails on it with "Connection is closed.", and every worker logged that
    // at level error, "worker error", on a clean stop.
    const errors: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void (JSON.parse(line).level >= 50 && errors.push(line)) });
    for (let i = 0; i < 24; i++) {
      const ctx = await createWorkerContext(env.config, { logger });
      const running = await startWorkers(ctx, selectQueues(undefined));
      for (let turn = 0; turn < i % 8; turn++) await new Promise((resolve) => setImmediate(resolve));
      await closeWithin(20_000, running, ctx);
    }
    // Late failures surface a few turns after close().
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(errors).toEqual([]);
  });

  it('Redis refusing the workers, then accepting but never answering: no unhandled error, close resolves', async () => {
    // The context reached Redis (startWorkers needs it); the workers' own connections do not:
    // Redis went away just after, or refuses new clients. They are refused first (an error
    // their start remembers), then a server on that port accepts and says nothing.
    const ctx = await createWorkerContext(env.config);
    const port = await freePort();
    const workersCtx: WorkerContext = { ...ctx, config: { ...ctx.config, REDIS_URL: `redis://127.0.0.1:${port}` } };
    const queues = selectQueues(undefined);
    let silent: Server | undefined;
    const sockets = new Set<Socket>();
    try {
      const seen = await unhandledDuring(async () => {
        const running = await startWorkers(workersCtx, queues);
        const errors = new Map<unknown, number>();
        for (const worker of running.workers) worker.on('error', () => errors.set(worker, (errors.get(worker) ?? 0) + 1));
        // Every worker's connections refused (two errors, as a rule one from each).
        await waitFor(() => running.workers.every((w) => (errors.get(w) ?? 0) >= 2), { what: 'every worker refused', timeoutMs: 30_000 });
        // It reads (and drops) what it is sent, so it sees a client hang up and hangs up too,
        // as a load balancer with no backend does.
        silent = createServer((socket) => {
          sockets.add(socket);
          socket.resume();
          socket.on('error', () => {});
          socket.on('close', () => sockets.delete(socket));
        });
        await new Promise<void>((resolve) => silent!.listen(port, '127.0.0.1', resolve));
        // Each worker's two connections reconnect to it and wait for answers that never come.
        await waitFor(() => sockets.size >= queues.length * 2, { what: 'every connection held by the silent server', timeoutMs: 30_000 });
        await closeWithin(20_000, running, ctx);
        // The starts still waiting settle when their sockets close.
        await waitFor(() => sockets.size === 0, { what: 'every connection closed', timeoutMs: 30_000 });
      });
      expect(seen).toEqual([]);
    } finally {
      for (const socket of sockets) socket.destroy();
      if (silent) await new Promise((resolve) => silent!.close(resolve));
    }
  });
});
