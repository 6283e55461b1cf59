import { loadConfig } from '@soundqueue/shared/config';
import { runMigrations } from '@soundqueue/shared/db/migrate';
import { createLogger } from '@soundqueue/shared/logger';
import { createApiContext, createApp } from './app';
import { serve } from './serve';

// The API process: migrate, listen, print the dev token when auth is not configured.
const config = loadConfig();
const logger = createLogger('api', config);
await runMigrations(config.DATABASE_URL);
const ctx = await createApiContext(config, logger);
const server = await serve(createApp(ctx), config.PORT, { streams: ctx.streams });
const url = config.PUBLIC_URL ?? `http://localhost:${config.PORT}`;
logger.info({ url }, 'api listening');
if (ctx.auth.devToken) {
  console.log(`\nsoundqueue API on ${url}\nDev token (user "demo-user", valid 30 days; auth is not configured):\n\n  ${ctx.auth.devToken}\n`);
}

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping: closing the listener, ending event streams, finishing requests in progress');
  setTimeout(() => process.exit(1), 15_000).unref();
  await server.close();
  await ctx.close();
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
