import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '@soundqueue/shared/config';
import { createDb, type Db } from '@soundqueue/shared/db/client';
import type { Publish } from '@soundqueue/shared/events';
import { createNotifier } from '@soundqueue/shared/notify';
import { createLogger, type Logger } from '@soundqueue/shared/logger';
import { queueNames, type QueueName } from '@soundqueue/shared/queues';
import { closeOver, createWorkerConnection, logConnectionState } from '@soundqueue/shared/redis';
import { createStorage, type Storage } from '@soundqueue/shared/storage/index';
import { ffmpegMixer, type Mixer } from './audio/mixer';
import { createProviders, type Providers } from './providers';
import type { ResolveHost } from './webhook-request';

/** What every processor gets: the stores, the providers and a scratch directory. */
export interface WorkerContext {
  config: Config;
  db: Db;
  redis: Redis;
  storage: Storage;
  providers: Providers;
  /** Voice measurement and track mixing (ffmpeg; benchmarks pass a pass-through one). */
  mixer: Mixer;
  publish: Publish;
  /** Producer handles, for processors that add jobs (the book job adds soundscapes). */
  queues: Record<QueueName, Queue>;
  logger: Logger;
  scratchDir: string;
  /** How webhook deliveries resolve host names (the system's, unless a test plays DNS). */
  resolveHost?: ResolveHost;
  close(): Promise<void>;
}

export async function createWorkerContext(
  config: Config,
  options: { providers?: Providers; mixer?: Mixer; logger?: Logger; resolveHost?: ResolveHost } = {},
): Promise<WorkerContext> {
  const logger = options.logger ?? createLogger('worker', config);
  const dbHandle = createDb(config.DATABASE_URL, { max: config.DATABASE_POOL_SIZE });
  const redis = createWorkerConnection(config.REDIS_URL);
  logConnectionState(redis, logger, 'worker');
  const scratchDir = join(tmpdir(), `soundqueue-${process.pid}`);
  await mkdir(scratchDir, { recursive: true });
  const queues = Object.fromEntries(
    queueNames.map((name) => [name, new Queue(name, { connection: redis, prefix: config.QUEUE_PREFIX })]),
  ) as Record<QueueName, Queue>;
  // See the API context: an 'error' with no listener would become an unhandled rejection.
  for (const queue of Object.values(queues)) queue.on('error', (error) => logger.debug({ err: error.message }, 'queue client error'));
  return {
    config,
    db: dbHandle.db,
    redis,
    storage: createStorage(config),
    providers: options.providers ?? createProviders(config),
    mixer: options.mixer ?? ffmpegMixer,
    publish: createNotifier(dbHandle.db, redis, queues.webhooks, config, logger),
    queues,
    logger,
    scratchDir,
    resolveHost: options.resolveHost,
    async close() {
      await closeOver(redis, Object.values(queues));
      await dbHandle.close();
    },
  };
}
