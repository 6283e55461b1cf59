import { FlowProducer, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '@soundqueue/shared/config';
import { createDb, type Db } from '@soundqueue/shared/db/client';
import type { Publish } from '@soundqueue/shared/events';
import { createNotifier } from '@soundqueue/shared/notify';
import { createLogger, type Logger } from '@soundqueue/shared/logger';
import { addMetricsSource } from './store-metrics';
import { queueNames, type QueueName } from '@soundqueue/shared/queues';
import { closeOver, createEnqueueConnection, createProducerConnection, createWorkerConnection, logConnectionState } from '@soundqueue/shared/redis';
import { createStorage, type Storage } from '@soundqueue/shared/storage/index';
import { createAuth, type Auth } from './auth';
import { createBackground, type Background } from './background';
import { sharedSigningKey } from './signing-key';
import { EventHub } from './events/event-hub';
import { createStreamLimit, type StreamLimit } from './events/stream-limit';
import { redisStreamSlots } from './events/stream-slots';

/** Everything a route needs, built once per process and passed in plainly. */
export interface ApiContext {
  config: Config;
  db: Db;
  redis: Redis;
  queues: Record<QueueName, Queue>;
  flows: FlowProducer;
  /** The flows' own connection (createEnqueueConnection), pinged by /readyz. */
  enqueueRedis: Redis;
  storage: Storage;
  publish: Publish;
  /** Notifications a request leaves behind when it answers (a refused enqueue's); close() waits for them. */
  background: Background;
  auth: Auth;
  events: EventHub;
  /** Open event streams per user, capped at SSE_MAX_STREAMS_PER_USER across every API process. */
  streams: StreamLimit;
  logger: Logger;
  close(): Promise<void>;
}

export async function createApiContext(config: Config, logger = createLogger('api', config)): Promise<ApiContext> {
  const dbHandle = createDb(config.DATABASE_URL, { max: config.DATABASE_POOL_SIZE });
  const auth = await createAuth(config, { sharedKey: () => sharedSigningKey(dbHandle.db) }).catch(async (error: unknown) => {
    await dbHandle.close();
    throw error;
  });
  const redis = createProducerConnection(config.REDIS_URL);
  logConnectionState(redis, logger, 'api');
  const prefix = config.QUEUE_PREFIX;
  const queues = Object.fromEntries(queueNames.map((name) => [name, new Queue(name, { connection: redis, prefix })])) as Record<
    QueueName,
    Queue
  >;
  // Flows go over a connection of their own that never holds a command for later: an enqueue
  // the API reported as failed must not land when Redis comes back (createEnqueueConnection).
  // The version check is left to the queues above: it is the one command BullMQ sends before
  // the first add, and one lost in a reconnect (not resent here) would fail every add after it.
  const enqueueRedis = createEnqueueConnection(config.REDIS_URL, `${prefix}:flows`);
  const flows = new FlowProducer({ connection: enqueueRedis, prefix, skipVersionCheck: true });
  // BullMQ emits connection trouble as 'error' events; without a listener an event emitted
  // while a context closes (its Redis client already gone) becomes an unhandled rejection.
  const onError = (error: Error) => logger.debug({ err: error.message }, 'queue client error');
  for (const queue of Object.values(queues)) queue.on('error', onError);
  flows.on('error', onError);
  // Named, so an operator (and a test) can tell it apart in CLIENT LIST.
  const subscriber = createWorkerConnection(config.REDIS_URL, `${prefix}:events-subscriber`);
  logConnectionState(subscriber, logger, 'events subscriber');
  const events = new EventHub(redis, subscriber, prefix);
  const background = createBackground((error) => logger.error({ err: error }, 'background notification failed'));
  const removeMetricsSource = addMetricsSource({ db: dbHandle.db, queues: Object.values(queues) });
  return {
    config,
    db: dbHandle.db,
    redis,
    queues,
    flows,
    enqueueRedis,
    storage: createStorage(config),
    publish: createNotifier(dbHandle.db, redis, queues.webhooks, config, logger),
    background,
    auth,
    events,
    streams: createStreamLimit(config.SSE_MAX_STREAMS_PER_USER, redisStreamSlots(redis, prefix)),
    logger,
    async close() {
      removeMetricsSource();
      await background.settled();
      await events.close();
      await closeOver(enqueueRedis, [flows]);
      await closeOver(redis, Object.values(queues));
      await dbHandle.close();
    },
  };
}
