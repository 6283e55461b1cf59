import { createApiContext, createApp, serve } from '@soundqueue/api';

import { loadConfig } from '@soundqueue/shared/config';
import { runMigrations } from '@soundqueue/shared/db/migrate';
import { createLogger } from '@soundqueue/shared/logger';
import { createWorkerContext, selectQueues, startWorkers } from '@soundqueue/worker';

// `npm start`: the API and every worker in one process, for local use.
const config = loadConfig();
const logger = createLogger('soundqueue', config);
await runMigrations(config.DATABASE_URL);
const api = await createApiContext(config, logger.child({ service: 'api' }));
const workerCtx = await createWorkerContext(config, { logger: logger.child({ service: 'worker' }) });
const workers = await startWorkers(workerCtx, selectQueues(config.WORKER_QUEUES));
const server = await serve(createApp(api), config.PORT, { streams: api.streams });
const url = config.PUBLIC_URL ?? `http://localhost:${config.PORT}`;
console.log(`\nsoundqueue is running on ${url}`);
console.log(`  providers: speech=${workerCtx.providers.speech.name} analysis=${workerCtx.providers.analysis.name} soundscape=${workerCtx.providers.soundscape.name}`);
console.log(`  files: ${config.STORAGE_DIR}`);
if (api.auth.devToken) {
  console.log(`\nDev token (user "demo-user", valid 30 days; auth is not configured):\n\n  ${api.auth.devToken}\n`);
  console.log(`  export TOKEN=${api.auth.devToken}\n`);
}

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(1), 30_000).unref();
  await server.close();
  await workers.close();
  await Promise.all([api.close(), workerCtx.close()]);
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown());
process.on('SIGINT', () => void shutdown());
