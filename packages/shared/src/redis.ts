import { Redis } from 'ioredis';

/**
 * For BullMQ workers and blocking commands: never give up on a command, because a worker
 * that rejects its own commands during a Redis blip would fail jobs that did nothing wrong.
 */
export function createWorkerConnection(url: string, connectionName?: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, ...(connectionName ? { connectionName } : {}) });
}

/** A command, or a connection attempt, gives up after one retry or 5 s. */
const FAIL_FAST = { maxRetriesPerRequest: 1, connectTimeout: 5_000, commandTimeout: 5_000 };

/**
 * For the API's producers and reads: fail fast, so a request answers 503 while Redis is
 * away instead of hanging until the client gives up.
 */
export function createProducerConnection(url: string): Redis {
  return new Redis(url, { ...FAIL_FAST });
}

/**
 * For the API's FlowProducer: a flow reaches Redis when the API adds it, or never. Once the
 * API gives up on an enqueue it records the work as failed and answers 503, so nothing may be
 * kept for later: while the connection is down a command is refused at once instead of
 * waiting in the offline queue (ioredis would deliver it on reconnect), and a command in
 * flight when the connection dropped is not sent again on reconnect. A flow is one MULTI/EXEC
 * written in one piece, so it is refused whole, never in part.
 */
export function createEnqueueConnection(url: string, connectionName?: string): Redis {
  return new Redis(url, {
    ...FAIL_FAST,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    ...(connectionName ? { connectionName } : {}),
  });
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

/** What closeOver needs of a BullMQ Queue or FlowProducer. */
interface OverConnection {
  waitUntilReady(): Promise<unknown>;
  close(): Promise<void>;
}

/**
 * Closes BullMQ queues or flow producers and the connection they share. The connection goes
 * first, and they are closed once what they started on it has settled: each starts by
 * waiting for the connection (and its INFO), reports a start that fails (the connection
 * closed while still connecting: an API stopped right after it started) on an 'error' event,
 * and stops listening for that event when closed; an 'error' event nobody listens for throws,
 * here an unhandled rejection, which ends the process. ioredis ends a connection that has a
 * socket (or has never connected) with an 'end' event, on which such a start fails at once;
 * one between two reconnection attempts ends without a word, and a start waiting on it
 * never fails, so there is nothing to wait for.
 */
export async function closeOver(connection: Redis, clients: OverConnection[]): Promise<void> {
  const endsWithEvent = ['wait', 'connecting', 'connect', 'ready'].includes(connection.status);
  // Not events.once: that rejects on an 'error' event, which a closing connection may emit.
  const ended = new Promise<void>((resolve) => (endsWithEvent ? connection.once('end', () => resolve()) : resolve()));
  connection.disconnect();
  await ended;
  if (endsWithEvent) await Promise.all(clients.map((client) => client.waitUntilReady().catch(() => undefined)));
  await Promise.all(clients.map((client) => client.close()));
}
