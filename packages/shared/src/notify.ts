import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from './config';
import type { Db } from './db/client';
import { createPublisher, type Publish } from './events';
import type { Logger } from './logger';
import { tuningFrom } from './queues';
import { dispatchWebhooks } from './webhooks';

/**
 * What processors and routes call after a transition commits: progress events for open
 * streams, then webhook deliveries for the events endpoints subscribe to. Neither can undo
 * the committed change, so failures are logged rather than thrown.
 */
export function createNotifier(db: Db, redis: Redis, webhooks: Queue, config: Config, logger: Logger): Publish {
  const publish = createPublisher(redis, config.QUEUE_PREFIX, (error) => logger.warn({ err: error }, 'could not publish a progress event'), {
    openSeconds: config.EVENT_LOG_TTL_SECONDS,
    finishedSeconds: config.EVENT_LOG_FINISHED_TTL_SECONDS,
  });
  const tuning = tuningFrom(config);
  return async (events) => {
    if (events.length === 0) return;
    await publish(events);
    try {
      await dispatchWebhooks(db, webhooks, tuning, events);
    } catch (error) {
      logger.error({ err: error }, 'could not enqueue webhook deliveries');
    }
  };
}
