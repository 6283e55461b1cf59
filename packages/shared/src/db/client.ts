import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import * as schema from './schema';

export type Db = NodePgDatabase<typeof schema>;
/** A transaction handle; the same query API as Db. */
export type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];

export interface DbHandle {
  db: Db;
  pool: pg.Pool;
  close(): Promise<void>;
}

/**
 * Opening a connection must fail fast (a database that does not answer in 5 s is down), but
 * waiting for a free pooled client during a burst must not: pg-pool used the one option for
 * both, so 200 simultaneous requests on a busy machine got 500s ("timeout exceeded when
 * trying to connect") after 5 s in the pool's queue. Clients keep 5 s; the queue waits 30 s.
 */
class Client extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(typeof config === 'string' ? { connectionString: config, connectionTimeoutMillis: 5_000 } : { ...config, connectionTimeoutMillis: 5_000 });
  }
}

export function createDb(url: string, options: { max?: number } = {}): DbHandle {
  const pool = new pg.Pool({ connectionString: url, max: options.max ?? 10, connectionTimeoutMillis: 30_000, Client });
  // An idle client losing its server (PostgreSQL restarted) must not crash the process;
  // the pool drops it and the next query reconnects.
  pool.on('error', () => {});
  // A checked-out client (inside a transaction) has no pool listener: losing its server then
  // emitted an unhandled 'error' and killed the whole process. The transaction's query already
  // rejects with the error, and the pool discards the broken client on release.
  pool.on('connect', (client) => client.on('error', () => {}));
  const db = drizzle(pool, { schema });
  return { db, pool, close: () => pool.end() };
}
