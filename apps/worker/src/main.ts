import type { Server } from 'node:http';
import { loadConfig } from '@soundqueue/shared/config';
import { runMigrations } from '@soundqueue/shared/db/migrate';
import { createLogger } from '@soundqueue/shared/logger';
import { createWorkerContext, type WorkerContext } from './context';
import { createMetricsServer } from './metrics-server';
import { selectQueues, startWorkers, type RunningWorkers } from './workers';

// The worker process: runs the processors of WORKER_QUEUES (default: all), no HTTP routes.
const config = loadConfig();
const logger = createLogger('worker', config);
const queues = selectQueues(config.WORKER_QUEUES);

// Set as the start gets there. The signal handlers come first: a start can wait for Redis
// for as long as Redis is away, and a deploy rolled back meanwhile must still stop it.
let ctx: WorkerContext | undefined;
let running: RunningWorkers | undefined;
let metricsServer: Server | null = null;

let stopping = false;
async function shutdown(signal: string) {
  // A second signal while closing is harmless: the first shutdown is already under way.
  if (stopping) return;
  stopping = true;
  if (!running) {
    // The workers are made in the same turn as `running` is set (startWorkers makes them
    // after its last wait), so none exists yet and no job can have been taken: nothing to
    // finish, and closing a context whose Redis never answered would only wait on it.
    logger.info({ signal }, 'stopped before the workers started; no job was taken');
    process.exit(0);
  }
  logger.info({ signal }, 'stopping: finishing jobs in progress');
  const deadline = setTimeout(() => {
    logger.error('jobs did not finish within 30 s; exiting (they will be retried as stalled)');
    process.exit(1);
  }, 30_000);
  deadline.unref();
  metricsServer?.close();
  await running.close();
  await ctx?.close();
  logger.info('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

await runMigrations(config.DATABASE_URL);
ctx = await createWorkerContext(config, { logger });
// Workers serve no routes, only their own metrics for Prometheus, on WORKER_METRICS_PORT.
// Listening before any job is taken and before "worker started" is logged: a started worker
// answers scrapes, and a port it cannot have (in use) stops it at start, saying so, rather
// than killing it later with an unhandled 'error' event.
if (config.WORKER_METRICS_PORT !== undefined) {
  const server = createMetricsServer(config.METRICS_TOKEN);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.WORKER_METRICS_PORT, () => {
      server.off('error', reject);
      resolve();
    });
  });
  metricsServer = server;
}
running = await startWorkers(ctx, queues);
logger.info({ queues, speech: ctx.providers.speech.name, analysis: ctx.providers.analysis.name, soundscape: ctx.providers.soundscape.name }, 'worker started');
