import pg from 'pg';

// The durable writes DESIGN.md asks of a track, and nothing else, for a second baseline of
// benchmark 1: the raw BullMQ flow whose no-op processors also make them. Each track moves
// through its states one conditional single-row statement at a time (pending → generating →
// voiced → mixing → completed), its voice rendition is claimed and marked ready, its
// provider call is recorded, and its terminal update carries the batch counters in the same
// statement, as in the real flow. The tables are the benchmark's own, in its own database;
// statements are prepared, like the real flow's per-track ones. Comparing the real flow with
// this baseline shows what the service costs beyond the writes themselves.
//
// `grouped: true` makes the same writes with group commit, the cheapest way to make them
// that keeps every promise (each row's change conditional, the counters in the statement
// that ends the track): each per-track statement collects the rows of every job waiting to
// make it and sends them as one multi-row statement as soon as the previous one of its kind
// has returned. It answers how far the design's writes alone could go.

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
  /** Per-track statements sent and rows they carried, since the start (grouped: rows > statements). */
  sent(): { statements: number; rows: number };
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
const finaliseBatch = statement(
  'finalise',
  `update bench_raw_batches set status = case when completed = total then 'completed' else 'partial_success' end, updated_at = now()
    where id = $1 and status = 'pending' and pending = 0`,
);

/** A per-track write: its single-row statement, and the same write for many rows at once. */
interface Write {
  name: string;
  single: string;
  /** Takes one array per parameter of `single`, one element per row. */
  grouped: string;
}

/** One track row from `from` to `to`. */
const transition = (name: string, from: string, to: string, voiceKey = false): Write => ({
  name,
  single: `update bench_raw_tracks set status = '${to}'${voiceKey ? ', voice_key = $2' : ''}, updated_at = now() where id = $1 and status = '${from}'`,
  grouped: `update bench_raw_tracks t set status = '${to}'${voiceKey ? ', voice_key = u.k' : ''}, updated_at = now()
    from unnest($1::uuid[]${voiceKey ? ', $2::text[]' : ''}) as u(id${voiceKey ? ', k' : ''}) where t.id = u.id and t.status = '${from}'`,
});

const WRITES = {
  start: transition('start', 'pending', 'generating'),
  claim: {
    name: 'claim',
    single: `insert into bench_raw_renditions (key, status) values ($1, 'generating') on conflict (key) do nothing`,
    grouped: `insert into bench_raw_renditions (key, status) select k, 'generating' from unnest($1::text[]) as k on conflict (key) do nothing`,
  },
  ready: {
    name: 'ready',
    single: `update bench_raw_renditions set status = 'ready', updated_at = now() where key = $1 and status = 'generating'`,
    grouped: `update bench_raw_renditions r set status = 'ready', updated_at = now() from unnest($1::text[]) as k where r.key = k and r.status = 'generating'`,
  },
  call: {
    name: 'call',
    single: `insert into bench_raw_calls (track_id, cost_usd) values ($1, 0.000015)`,
    grouped: `insert into bench_raw_calls (track_id, cost_usd) select t, 0.000015 from unnest($1::uuid[]) as t`,
  },
  voiced: transition('voiced', 'generating', 'voiced', true),
  mixing: transition('mixing', 'voiced', 'mixing'),
  // The counters in the same statement, only for rows the update changed (grouped: per batch).
  completed: {
    name: 'completed',
    single: `with t as (update bench_raw_tracks set status = 'completed', updated_at = now() where id = $1 and status = 'mixing' returning batch_id)
      update bench_raw_batches b set completed = completed + 1, pending = pending - 1, updated_at = now() from t where b.id = t.batch_id`,
    grouped: `with t as (update bench_raw_tracks t set status = 'completed', updated_at = now()
        from unnest($1::uuid[]) as u(id) where t.id = u.id and t.status = 'mixing' returning t.batch_id),
      c as (select batch_id, count(*)::int as n from t group by batch_id),
      b as (update bench_raw_batches b set completed = completed + c.n, pending = pending - c.n, updated_at = now() from c where b.id = c.batch_id)
      select count(*)::int as n from t`,
  },
} satisfies Record<string, Write>;

type Send = (write: Write, args: unknown[]) => Promise<void>;

/**
 * Group commit: rows for a write wait while one statement of it is out, then go together.
 * Every row must be changed: a grouped statement answers how many rows it changed (its
 * rowCount, or the `n` it selects), which must be how many it carried.
 */
function groupCommitter(pool: pg.Pool, counts: { statements: number; rows: number }): Send {
  type Waiting = { args: unknown[]; done: (error?: unknown) => void };
  const queues = new Map<Write, { waiting: Waiting[]; busy: boolean }>();
  const flush = async (write: Write) => {
    const queue = queues.get(write)!;
    if (queue.busy || queue.waiting.length === 0) return;
    queue.busy = true;
    const rows = queue.waiting.splice(0);
    try {
      const columns = rows[0]!.args.map((_, i) => rows.map((r) => r.args[i]));
      const result = await pool.query({ name: `sq_bench_grouped_${write.name}`, text: write.grouped, values: columns });
      const changed = result.rows[0]?.n ?? result.rowCount;
      if (changed !== rows.length) throw new Error(`${write.name}: changed ${changed} rows, not ${rows.length}`);
      counts.statements += 1;
      counts.rows += rows.length;
      for (const r of rows) r.done();
    } catch (error) {
      for (const r of rows) r.done(error);
    } finally {
      queue.busy = false;
      void flush(write);
    }
  };
  return (write, args) =>
    new Promise<void>((resolve, reject) => {
      if (!queues.has(write)) queues.set(write, { waiting: [], busy: false });
      queues.get(write)!.waiting.push({ args, done: (error) => (error === undefined ? resolve() : reject(error)) });
      void flush(write);
    });
}

export async function createRawWrites(databaseUrl: string, poolSize: number, options: { grouped?: boolean } = {}): Promise<RawWrites> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: poolSize });
  const setup = new pg.Client({ connectionString: databaseUrl });
  await setup.connect();
  try {
    await setup.query(SCHEMA);
  } finally {
    await setup.end();
  }
  const counts = { statements: 0, rows: 0 };
  // Every statement must change exactly one row, or the baseline would be skipping writes
  // the real flow makes (the runs use fresh ids, so a guard never legitimately declines).
  const single: Send = async (write, args) => {
    const { rowCount } = await pool.query({ name: `sq_bench_raw_${write.name}`, text: write.single, values: args });
    if (rowCount !== 1) throw new Error(`${write.name}: changed ${rowCount} rows, not 1`);
    counts.statements += 1;
    counts.rows += 1;
  };
  const send = options.grouped ? groupCommitter(pool, counts) : single;
  return {
    async createBatch(batchId, trackIds) {
      const { rowCount } = await pool.query(insertBatch([batchId, trackIds]));
      if (rowCount !== trackIds.length) throw new Error(`insert_batch: ${rowCount} track rows, not ${trackIds.length}`);
    },
    async speak(trackId) {
      const key = `voice-${trackId}`;
      await send(WRITES.start, [trackId]);
      await send(WRITES.claim, [key]);
      await send(WRITES.ready, [key]);
      await send(WRITES.call, [trackId]);
      await send(WRITES.voiced, [trackId, `renditions/${key}.mp3`]);
    },
    async mix(trackId) {
      await send(WRITES.mixing, [trackId]);
      await send(WRITES.completed, [trackId]);
    },
    async finalise(batchId) {
      const { rowCount } = await pool.query(finaliseBatch([batchId]));
      if (rowCount !== 1) throw new Error(`finalise: changed ${rowCount} rows, not 1`);
    },
    async outcome(batchIds) {
      const { rows } = await pool.query<{ completed: number; finalised: number }>(
        `select coalesce(sum(completed), 0)::int as completed, count(*) filter (where status <> 'pending')::int as finalised
           from bench_raw_batches where id = any($1)`,
        [batchIds],
      );
      return { completedTracks: rows[0]!.completed, finalisedBatches: rows[0]!.finalised };
    },
    sent: () => ({ ...counts }),
    close: () => pool.end(),
  };
}
