import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { loadConfig, type Config } from '@soundqueue/shared/config';
import { runMigrations } from '@soundqueue/shared/db/migrate';

export const ADMIN_DATABASE_URL = process.env.TEST_DATABASE_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const TEST_JWT_SECRET = 'test-secret-that-is-long-enough-for-hs256!';

export interface TestEnv {
  /** Env vars for loadConfig or for a child process. */
  env: Record<string, string>;
  config: Config;
  databaseUrl: string;
  prefix: string;
  storageDir: string;
  cleanup(): Promise<void>;
}

/**
 * Gives a test file its own PostgreSQL database (migrated), its own BullMQ prefix and its
 * own storage directory, on the machine's real services; cleanup drops all three.
 */
export async function createTestEnv(overrides: Record<string, string> = {}): Promise<TestEnv> {
  const id = randomBytes(5).toString('hex');
  const dbName = `sq_test_${id}`;
  const databaseUrl = ADMIN_DATABASE_URL.replace(/\/[^/]*$/, `/${dbName}`);
  await runMigrations(databaseUrl);
  const storageDir = await mkdtemp(join(tmpdir(), `sq-storage-${id}-`));
  const prefix = `sqtest-${id}`;
  const env: Record<string, string> = {
    NODE_ENV: 'test',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'error',
    DATABASE_URL: databaseUrl,
    DATABASE_POOL_SIZE: '5',
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: prefix,
    STORAGE_DIR: storageDir,
    AUTH_JWT_SECRET: TEST_JWT_SECRET,
    JOB_BACKOFF_MS: '200',
    PORT: '0',
    ...overrides,
  };
  return {
    env,
    config: loadConfig(env),
    databaseUrl,
    prefix,
    storageDir,
    async cleanup() {
      await deleteRedisPrefix(TEST_REDIS_URL, prefix);
      await dropDatabase(dbName);
      await rm(storageDir, { recursive: true, force: true });
    },
  };
}

export async function deleteRedisPrefix(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

export async function dropDatabase(name: string): Promise<void> {
  const client = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
  await client.connect();
  try {
    await client.query(`drop database if exists "${name}" with (force)`);
  } finally {
    await client.end();
  }
}

/** One query on a test database, for assertions on rows. */
export async function queryRows<T = any>(databaseUrl: string, text: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as T[];
  } finally {
    await client.end();
  }
}

/**
 * Runs `body` in a transaction that holds `table`'s row `id` (FOR UPDATE) and commits after it:
 * whatever `body` starts that needs the row waits until then. A failing `body` ends the
 * connection, which rolls the transaction back.
 */
export async function holdingRow<T>(databaseUrl: string, table: string, id: string, body: (holder: pg.Client) => Promise<T>): Promise<T> {
  const holder = new pg.Client({ connectionString: databaseUrl });
  await holder.connect();
  try {
    await holder.query('begin');
    await holder.query(`select id from ${table} where id = $1 for update`, [id]);
    const result = await body(holder);
    await holder.query('commit');
    return result;
  } finally {
    await holder.end();
  }
}

/** Sessions of the database waiting for a lock, read from outside any transaction. */
export async function lockWaits(databaseUrl: string): Promise<number> {
  const [row] = await queryRows<{ n: number }>(databaseUrl, `select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`);
  return row!.n;
}
