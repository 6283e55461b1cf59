import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { runMigrations } from '@soundqueue/shared/db/migrate';
import { ADMIN_DATABASE_URL, dropDatabase } from '../helpers/services';

const name = `sq_test_mig_${randomBytes(4).toString('hex')}`;
const url = ADMIN_DATABASE_URL.replace(/\/[^/]*$/, `/${name}`);

async function query<T extends pg.QueryResultRow>(sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

describe('migrations', () => {
  afterAll(() => dropDatabase(name));

  it('create the database and every table on an empty server', async () => {
    await runMigrations(url);
    const tables = (await query<{ table_name: string }>(`select table_name from information_schema.tables where table_schema = 'public' order by 1`)).map((r) => r.table_name);
    expect(tables).toEqual(
      expect.arrayContaining(['audio_generation_batches', 'audio_sets', 'audio_tracks', 'voice_renditions', 'books', 'book_spreads', 'scenes', 'soundscapes', 'provider_calls', 'service_secrets']),
    );
    const indexes = (await query<{ indexname: string }>(`select indexname from pg_indexes where tablename = 'audio_generation_batches'`)).map((r) => r.indexname);
    expect(indexes).toEqual(expect.arrayContaining(['batches_user_vision_idx', 'batches_status_idx', 'batches_created_at_idx', 'batches_user_status_idx']));
  });

  it('leave track rows room to change in place: no index covers a column a transition writes, and pages keep space free', async () => {
    // A track moves through 4 statuses; an update that touches no indexed column and finds
    // room on its page is a HOT update, with no new entry in any index. Indexing status made
    // 4 of 5 track updates write every index of the table.
    const indexed = await query<{ column: string }>(
      `select distinct a.attname as column
         from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
        where i.indrelid = 'audio_tracks'::regclass order by 1`,
    );
    expect(indexed.map((r) => r.column)).toEqual(['batch_id', 'id', 'section_key', 'set_id', 'user_id']);
    const options = await query<{ relname: string; reloptions: string[] | null }>(
      `select relname, reloptions from pg_class where relname in ('audio_tracks', 'audio_generation_batches') order by 1`,
    );
    expect(options).toEqual([
      { relname: 'audio_generation_batches', reloptions: ['fillfactor=80'] },
      { relname: 'audio_tracks', reloptions: ['fillfactor=80'] },
    ]);
  });

  it('raise the version of a batch, track or book row with every update, in place: version is in no index', async () => {
    const indexed = await query<{ table: string }>(
      `select distinct i.indrelid::regclass::text as table
         from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
        where a.attname = 'version'`,
    );
    expect(indexed).toEqual([]);
    // One connection, one transaction: its own counts of HOT updates are exact at once.
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query('begin');
      const [batch] = (
        await client.query(`insert into audio_generation_batches (user_id, vision_id, variant_ids, voice_id, model, sections_requested, total_tracks_expected, tracks_pending, request_hash)
                            values ('u', 'v', '[]', 'alloy', 'm', '[]', 2, 2, 'h') returning id, version`)
      ).rows;
      expect(Number(batch.version)).toBe(1);
      const versions: number[] = [];
      // The counter updates a finished track makes (status is indexed, so a status change is not HOT either way).
      for (const step of ['tracks_pending = 1, tracks_completed = 1', 'tracks_pending = 0, tracks_failed = 1', 'version = 1']) {
        const { rows } = await client.query(`update audio_generation_batches set ${step} where id = $1 returning version`, [batch.id]);
        versions.push(Number(rows[0].version));
      }
      // A statement cannot set it back either: the trigger has the last word.
      expect(versions).toEqual([2, 3, 4]);
      const { rows } = await client.query(`select pg_stat_get_xact_tuples_hot_updated('audio_generation_batches'::regclass)::int as hot`);
      expect(rows[0].hot).toBe(3);
      const [book] = (await client.query(`insert into books (user_id, title, page_count, spread_count) values ('u', 't', 2, 1) returning id`)).rows;
      const bumped = await client.query(`update books set processed_spreads = 1 where id = $1 returning version`, [book.id]);
      expect(Number(bumped.rows[0].version)).toBe(2);
      await client.query('rollback');
    } finally {
      await client.end();
    }
  });

  it('apply a second time, and from several processes at once, without change', async () => {
    const before = await query<{ n: string }>(`select count(*) as n from drizzle.__drizzle_migrations`);
    await Promise.all([runMigrations(url), runMigrations(url), runMigrations(url)]);
    const after = await query<{ n: string }>(`select count(*) as n from drizzle.__drizzle_migrations`);
    expect(after[0]!.n).toBe(before[0]!.n);
    expect(Number(after[0]!.n)).toBeGreaterThan(0);
  });

  it('enforce that batch counters add up', async () => {
    await expect(
      query(`insert into audio_generation_batches (user_id, vision_id, variant_ids, voice_id, model, sections_requested, total_tracks_expected, tracks_pending, request_hash)
             values ('u', 'v', '[]', 'alloy', 'm', '[]', 3, 2, 'h')`),
    ).rejects.toThrow(/batches_counters_add_up/);
  });
});
