import { Redis } from 'ioredis';

/**
 * For BullMQ workers and blocking commands: never give up on a command, because a worker
 * that rejects its own commands during a Redis blip would fail jobs that did nothing wrong.
 */
export function createWorkerConnection(url: string, connectionName?: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, ...(connectionName ? { connectionName } : {}) });
}

/**
 * For the API's producers and reads: fail fast, so a request answers 503 while Redis is
 * away instead of hanging until the client gives up.
 */
export function createProducerConnection(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: 1, connectTimeout: 5_000, commandTimeout: 5_000 });
}

/**
 * Logs a Redis outage once when it starts and once when it ends, rather than once per
 * reconnection attempt (ioredis retries every few hundred milliseconds).
 */
export function logConnectionState(redis: Redis, logger: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void }, name: string): void {
  let down = false;
  redis.on('error', (error: Error) => {
    if (down) return;
    down = true;
    logger.warn({ err: error.message, connection: name }, 'redis unreachable; reconnecting');
  });
  redis.on('ready', () => {
    if (!down) return;
    down = false;
    logger.info({ connection: name }, 'redis reachable again');
  });
}
