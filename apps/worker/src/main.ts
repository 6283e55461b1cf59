import { loadConfig } from '@soundqueue/shared/config';
import { runMigrations } from '@soundqueue/shared/db/migrate';
import { createLogger } from '@soundqueue/shared/logger';
import { createWorkerContext } from './context';
import { createMetricsServer } from './metrics-server';
import { selectQueues, startWorkers } from './workers';

// The worker process: runs the processors of WORKER_QUEUES (default: all), no HTTP routes.
const config = loadConfig();
const logger = createLogger('worker', config.LOG_LEVEL);
const queues = selectQueues(config.WORKER_QUEUES);
await runMigrations(config.DATABASE_URL);
const ctx = await createWorkerContext(config, { logger });
const running = await startWorkers(ctx, queues);
logger.info({ queues, speech: ctx.providers.speech.name, analysis: ctx.providers.analysis.name, soundscape: ctx.providers.soundscape.name }, 'worker started');

// Workers serve no routes, only their own metrics for Prometheus, on WORKER_METRICS_PORT.
const metricsServer = config.WORKER_METRICS_PORT === undefined ? null : createMetricsServer(config.METRICS_TOKEN).listen(config.WORKER_METRICS_PORT);

let stopping = false;
async function shutdown(signal: string) {
  // A second signal while closing is harmless: the first shutdown is already under way.
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping: finishing jobs in progress');
  const deadline = setTimeout(() => {
    logger.error('jobs did not finish within 30 s; exiting (they will be retried as stalled)');
    process.exit(1);
  }, 30_000);
  deadline.unref();
  metricsServer?.close();
  await running.close();
  await ctx.close();
  logger.info('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
