import type { Db } from './client';

// Prepared statements, built once per database handle. Building a drizzle query walks its
// whole column list each time (about a third of a worker's CPU per track in benchmark 1);
// a prepared one is built once, and PostgreSQL parses and plans it once per connection too.
// Keep this for statements run once or more per track or spread; everything else builds its
// query as usual.

const cache = new WeakMap<Db, Map<string, unknown>>();

/** The prepared statement `name` for `db`, built by `build` the first time it is asked for. */
export function preparedFor<T>(db: Db, name: string, build: (db: Db) => T): T {
  let statements = cache.get(db);
  if (!statements) cache.set(db, (statements = new Map()));
  let statement = statements.get(name) as T | undefined;
  if (statement === undefined) statements.set(name, (statement = build(db)));
  return statement;
}
