import { createApiContext, createApp, serve, type ApiContext, type Listening } from '@soundqueue/api';

import { loadConfig } from '@soundqueue/shared/config';
import { runMigrations } from '@soundqueue/shared/db/migrate';
import { createLogger } from '@soundqueue/shared/logger';
import { createWorkerContext, selectQueues, startWorkers, type RunningWorkers, type WorkerContext } from '@soundqueue/worker';

// `npm start`: the API and every worker in one process, for local use.
const config = loadConfig();
const logger = createLogger('soundqueue', config);

// Set as the start gets there. The signal handlers come first, as in the worker process
// (apps/worker/src/main.ts): the start waits for Redis for as long as Redis is away, and a
// Ctrl-C meanwhile must end it cleanly rather than by the signal's default action.
let api: ApiContext | undefined;
let workerCtx: WorkerContext | undefined;
let workers: RunningWorkers | undefined;
let server: Listening | undefined;

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  if (!workers) {
    // No worker exists yet, so no job was taken: nothing to finish, and closing contexts whose
    // Redis never answered would only wait on it.
    logger.info({ signal }, 'stopped before the workers started; no job was taken');
    process.exit(0);
  }
  logger.info({ signal }, 'stopping: finishing jobs in progress');
  setTimeout(() => process.exit(1), 30_000).unref();
  await server?.close();
  await workers.close();
  await Promise.all([api?.close(), workerCtx?.close()]);
  logger.info('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

await runMigrations(config.DATABASE_URL);
api = await createApiContext(config, logger.child({ service: 'api' }));
workerCtx = await createWorkerContext(config, { logger: logger.child({ service: 'worker' }) });
workers = await startWorkers(workerCtx, selectQueues(config.WORKER_QUEUES));
server = await serve(createApp(api), config.PORT, { streams: api.streams });
const url = config.PUBLIC_URL ?? `http://localhost:${config.PORT}`;
logger.info({ url }, 'soundqueue started');
console.log(`\nsoundqueue is running on ${url}`);
console.log(`  providers: speech=${workerCtx.providers.speech.name} analysis=${workerCtx.providers.analysis.name} soundscape=${workerCtx.providers.soundscape.name}`);
console.log(`  files: ${config.STORAGE_DIR}`);
if (api.auth.devToken) {
  console.log(`\nDev token (user "demo-user", valid 30 days; auth is not configured):\n\n  ${api.auth.devToken}\n`);
  console.log(`  export TOKEN=${api.auth.devToken}\n`);
}
