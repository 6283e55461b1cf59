import { Redis } from 'ioredis';

/**
 * For BullMQ workers and blocking commands: never give up on a command, because a worker
 * that rejects its own commands during a Redis blip would fail jobs that did nothing wrong.
 */
export function createWorkerConnection(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true });
}

/**
 * For the API's producers and reads: fail fast, so a request answers 503 while Redis is
 * away instead of hanging until the client gives up.
 */
export function createProducerConnection(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: 1, connectTimeout: 5_000, commandTimeout: 5_000 });
}
