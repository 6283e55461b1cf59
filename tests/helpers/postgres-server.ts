import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './processes';

// A private PostgreSQL cluster on a spare port, for tests that stop or restart the database
// under running services. initdb and pg_ctl run as the `postgres` OS user when the tests run
// as root (PostgreSQL refuses to run as root), as the current user otherwise.

const run = promisify(execFile);

export interface OwnPostgres {
  port: number;
  /** postgres://postgres@127.0.0.1:<port>/<database> */
  url(database?: string): string;
  /** Starts the cluster (again) on the same port, with its data as it was. */
  start(): Promise<void>;
  /** fast: clients disconnected, clean shutdown; immediate: like a crash (recovery on start). */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  /** Stops it and deletes its files. */
  destroy(): Promise<void>;
}

/** The newest PostgreSQL server binaries installed under /usr/lib/postgresql. */
export function findPostgresBin(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (!versions[0]) throw new Error('no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)');
  return join(root, versions[0], 'bin');
}

export async function startOwnPostgres(): Promise<OwnPostgres> {
  const bin = findPostgresBin();
  const asRoot = process.getuid?.() === 0;
  const tool = (name: string, args: string[]) =>
    asRoot ? run('runuser', ['-u', 'postgres', '--', join(bin, name), ...args]) : run(join(bin, name), args);
  const base = await mkdtemp(join(tmpdir(), 'sq-pg-'));
  const data = join(base, 'data');
  const sockets = join(base, 'sockets');
  await mkdir(data);
  await mkdir(sockets);
  if (asRoot) await run('chown', ['-R', 'postgres:postgres', base]);
  await tool('initdb', ['-D', data, '--auth=trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync']);
  const port = await freePort();
  // fsync=off only matters if the machine itself crashes; commits stay synchronous, so an
  // immediate stop (a crash of PostgreSQL) loses nothing a client was told was committed.
  const options = `-p ${port} -k ${sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`;
  let running = false;
  const own: OwnPostgres = {
    port,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
    async start() {
      // -w: pg_ctl returns once the server accepts connections.
      await tool('pg_ctl', ['-D', data, '-l', join(base, 'server.log'), '-w', '-t', '120', '-o', options, 'start']);
      running = true;
    },
    async stop(mode = 'fast') {
      if (!running) return;
      await tool('pg_ctl', ['-D', data, '-m', mode, '-w', '-t', '120', 'stop']);
      running = false;
    },
    async destroy() {
      await own.stop('immediate').catch(() => {});
      await rm(base, { recursive: true, force: true });
    },
  };
  await own.start();
  return own;
}
