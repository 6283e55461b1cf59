import pg from 'pg';

// The durable writes DESIGN.md asks of a track, and nothing else, for a second baseline of
// benchmark 1: the raw BullMQ flow whose no-op processors also make them. Each track moves
// through its states one conditional single-row statement at a time (pending → generating →
// voiced → mixing → completed), its voice rendition is claimed and marked ready, its
// provider call is recorded, and its terminal update carries the batch counters in the same
// statement, as in the real flow. The tables are the benchmark's own, in its own database;
// statements are prepared, like the real flow's per-track ones. Comparing the real flow with
// this baseline shows what the service costs beyond the writes themselves.

export interface RawWrites {
  /** The batch row and its track rows, one statement. */
  createBatch(batchId: string, trackIds: string[]): Promise<void>;
  /** The speech step's writes: start, rendition claim and ready, provider call, voice attached. */
  speak(trackId: string): Promise<void>;
  /** The mix step's writes: mixing, then completed with the batch counters. */
  mix(trackId: string): Promise<void>;
  /** The batch's terminal status, from its counters. */
  finalise(batchId: string): Promise<void>;
  /** Tracks counted completed in these batches, and how many of the batches are finalised. */
  outcome(batchIds: string[]): Promise<{ completedTracks: number; finalisedBatches: number }>;
  close(): Promise<void>;
}

const SCHEMA = `
  create table if not exists bench_raw_batches (
    id uuid primary key, status text not null default 'pending', total int not null,
    completed int not null default 0, pending int not null,
    created_at timestamptz not null default now(), updated_at timestamptz not null default now());
  create table if not exists bench_raw_tracks (
    id uuid primary key, batch_id uuid not null references bench_raw_batches(id),
    status text not null default 'pending', voice_key text, updated_at timestamptz not null default now());
  create table if not exists bench_raw_renditions (
    key text primary key, status text not null, updated_at timestamptz not null default now());
  create table if not exists bench_raw_calls (
    id bigserial primary key, track_id uuid not null, cost_usd numeric(12, 6) not null, at timestamptz not null default now());`;

const statement = (name: string, text: string) => (values: unknown[]) => ({ name: `sq_bench_raw_${name}`, text, values });

const insertBatch = statement(
  'insert_batch',
  `with b as (insert into bench_raw_batches (id, total, pending) values ($1, cardinality($2::uuid[]), cardinality($2::uuid[])) returning id)
   insert into bench_raw_tracks (id, batch_id) select t, b.id from b, unnest($2::uuid[]) as t`,
);
const startTrack = statement('start', `update bench_raw_tracks set status = 'generating', updated_at = now() where id = $1 and status = 'pending'`);
const claimRendition = statement('claim', `insert into bench_raw_renditions (key, status) values ($1, 'generating') on conflict (key) do nothing`);
const renditionReady = statement('ready', `update bench_raw_renditions set status = 'ready', updated_at = now() where key = $1 and status = 'generating'`);
const recordCall = statement('call', `insert into bench_raw_calls (track_id, cost_usd) values ($1, 0.000015)`);
const voiceAttached = statement('voiced', `update bench_raw_tracks set status = 'voiced', voice_key = $2, updated_at = now() where id = $1 and status = 'generating'`);
const startMix = statement('mixing', `update bench_raw_tracks set status = 'mixing', updated_at = now() where id = $1 and status = 'voiced'`);
const completeTrack = statement(
  'completed',
  `with t as (update bench_raw_tracks set status = 'completed', updated_at = now() where id = $1 and status = 'mixing' returning batch_id)
   update bench_raw_batches b set completed = completed + 1, pending = pending - 1, updated_at = now() from t where b.id = t.batch_id`,
);
const finaliseBatch = statement(
  'finalise',
  `update bench_raw_batches set status = case when completed = total then 'completed' else 'partial_success' end, updated_at = now()
    where id = $1 and status = 'pending' and pending = 0`,
);

export async function createRawWrites(databaseUrl: string, poolSize: number): Promise<RawWrites> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: poolSize });
  const setup = new pg.Client({ connectionString: databaseUrl });
  await setup.connect();
  try {
    await setup.query(SCHEMA);
  } finally {
    await setup.end();
  }
  // Every statement must change exactly one row, or the baseline would be skipping writes
  // the real flow makes (the runs use fresh ids, so a guard never legitimately declines).
  const one = async (query: pg.QueryConfig) => {
    const { rowCount } = await pool.query(query);
    if (rowCount !== 1) throw new Error(`${query.name}: changed ${rowCount} rows, not 1`);
  };
  return {
    async createBatch(batchId, trackIds) {
      const { rowCount } = await pool.query(insertBatch([batchId, trackIds]));
      if (rowCount !== trackIds.length) throw new Error(`insert_batch: ${rowCount} track rows, not ${trackIds.length}`);
    },
    async speak(trackId) {
      const key = `voice-${trackId}`;
      await one(startTrack([trackId]));
      await one(claimRendition([key]));
      await one(renditionReady([key]));
      await one(recordCall([trackId]));
      await one(voiceAttached([trackId, `renditions/${key}.mp3`]));
    },
    async mix(trackId) {
      await one(startMix([trackId]));
      await one(completeTrack([trackId]));
    },
    async finalise(batchId) {
      await one(finaliseBatch([batchId]));
    },
    async outcome(batchIds) {
      const { rows } = await pool.query<{ completed: number; finalised: number }>(
        `select coalesce(sum(completed), 0)::int as completed, count(*) filter (where status <> 'pending')::int as finalised
           from bench_raw_batches where id = any($1)`,
        [batchIds],
      );
      return { completedTracks: rows[0]!.completed, finalisedBatches: rows[0]!.finalised };
    },
    close: () => pool.end(),
  };
}
