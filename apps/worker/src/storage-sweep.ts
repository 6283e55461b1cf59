import { sql } from 'drizzle-orm';
import type { StoredEntry } from '@soundqueue/shared/storage/types';
import type { WorkerContext } from './context';
import { sweptFiles } from './metrics';

// The storage sweep: a maintenance task that removes stored files no row uses, for the cases
// no job is left to clean up after: a worker that died between storing a file and recording
// it when no batch end followed (removeUnnamedTrackFiles runs at a batch's end only), a voice
// rendition whose claim lapsed and that nobody asked for again, a completion whose outcome
// was unknown (its file was kept in case it had committed), and the local driver's temporary
// files of a write whose worker was killed mid-copy.
//
// Only files older than STORAGE_SWEEP_GRACE_SECONDS are considered: a job stores its file and
// records it a moment later, so a file that young may be about to be recorded. The grace is
// what makes the sweep safe against every job still going; it must be far longer than a job
// can take between the two (a database outage included), hence a day by default.
//
// Each folder is checked against the rows that own it, through an index: a mix under
// tracks/<batch>/ against that batch's tracks, a soundscape under soundscapes/<book>/ against
// that book's soundscapes, a voice under renditions/<hh>/<hash>.… against its rendition row.
// Files whose keys have none of these shapes are not ours and are left alone.

interface Family {
  prefix: string;
  /** The owner id the key names (batch, book, rendition hash), or null for a key not of ours. */
  owner(key: string): string | null;
  /** Of `keys` (each with its owner), those no row uses. */
  unused(ctx: WorkerContext, keys: string[], owners: string[]): Promise<string[]>;
}

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';

async function select(ctx: WorkerContext, query: ReturnType<typeof sql>): Promise<string[]> {
  const result = await ctx.db.execute<{ key: string }>(query);
  return result.rows.map((row) => row.key);
}

const FAMILIES: Family[] = [
  {
    prefix: 'tracks/',
    owner: (key) => new RegExp(`^tracks/(${UUID})/[^/]+\\.mp3$`).exec(key)?.[1] ?? null,
    unused: (ctx, keys, owners) =>
      select(ctx, sql`select l.key from unnest(${sql.param(keys)}::text[], ${sql.param(owners)}::uuid[]) as l(key, owner)
        where not exists (select 1 from audio_tracks t where t.batch_id = l.owner and t.mixed_file_key = l.key)`),
  },
  {
    prefix: 'soundscapes/',
    owner: (key) => new RegExp(`^soundscapes/(${UUID})/[^/]+\\.mp3$`).exec(key)?.[1] ?? null,
    unused: (ctx, keys, owners) =>
      select(ctx, sql`select l.key from unnest(${sql.param(keys)}::text[], ${sql.param(owners)}::uuid[]) as l(key, owner)
        where not exists (select 1 from soundscapes s where s.book_id = l.owner and s.file_key = l.key)`),
  },
  {
    // renditions/<hh>/<hash>.<claim>.<format>, or <hash>.<format> stored before claims.
    prefix: 'renditions/',
    owner: (key) => /^renditions\/[0-9a-f]{2}\/([0-9a-f]{64})\.[^/]+$/.exec(key)?.[1] ?? null,
    unused: (ctx, keys, owners) =>
      select(ctx, sql`select l.key from unnest(${sql.param(keys)}::text[], ${sql.param(owners)}::text[]) as l(key, owner)
        where not exists (select 1 from voice_renditions r where r.key_hash = l.owner and r.storage_key = l.key)`),
  },
];

/** Keys checked against the database per statement. */
const CHUNK = 1_000;

export interface SweepReport {
  /** Files older than the grace that were looked at. */
  checked: number;
  removed: string[];
}

/** One sweep of every folder our keys live in. A failure in one folder leaves the others to run. */
export async function sweepStorage(ctx: WorkerContext, now = Date.now()): Promise<SweepReport> {
  const cutoff = now - ctx.config.STORAGE_SWEEP_GRACE_SECONDS * 1000;
  const report: SweepReport = { checked: 0, removed: [] };
  for (const family of FAMILIES) {
    let entries: StoredEntry[];
    try {
      entries = (await ctx.storage.entries(family.prefix)).filter((e) => e.modifiedAt.getTime() < cutoff);
    } catch (error) {
      ctx.logger.warn({ err: error, prefix: family.prefix }, 'storage sweep: could not list the folder');
      continue;
    }
    report.checked += entries.length;
    // An abandoned temporary file is nobody's whatever its name: no write lasts the grace.
    const doomed = entries.filter((e) => e.temporary).map((e) => ({ key: e.key, why: 'temporary file of an abandoned write' }));
    const ours = entries.filter((e) => !e.temporary).flatMap((e) => {
      const owner = family.owner(e.key);
      return owner === null ? [] : [{ key: e.key, owner }];
    });
    for (let i = 0; i < ours.length; i += CHUNK) {
      const chunk = ours.slice(i, i + CHUNK);
      const unused = await family.unused(ctx, chunk.map((e) => e.key), chunk.map((e) => e.owner));
      doomed.push(...unused.map((key) => ({ key, why: 'no row uses it' })));
    }
    for (const { key, why } of doomed) {
      try {
        await ctx.storage.delete(key);
        report.removed.push(key);
        sweptFiles.inc({ folder: family.prefix.slice(0, -1) });
        ctx.logger.info({ fileKey: key, why }, 'storage sweep removed a file');
      } catch (error) {
        ctx.logger.warn({ err: error, fileKey: key }, 'storage sweep: could not remove a file');
      }
    }
  }
  return report;
}
