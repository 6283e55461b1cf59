import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenFor } from '../helpers/app';
import { expectCountersMatchRows } from '../helpers/batches';
import { openDb, type TestDb } from '../helpers/chaos';
import { percentile, runAutocannon, type AutocannonResult } from '../helpers/load';
import { freePort, killAll, spawnApi, type ServiceProcess } from '../helpers/processes';
import { openReliabilityLog } from '../helpers/reliability-log';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { openSse, type SseStream } from '../helpers/sse';
import { waitFor } from '../helpers/wait';

// One real API process (apps/api/src/main.ts, production pool size) under 200 concurrent
// batch creations, then 100 event streams held open while another 200 creations arrive,
// then all 100 streamed batches cancelled at once: every stream must get its terminal event
// and end. No worker runs, so what is measured is the API, PostgreSQL and Redis. Latencies
// are printed and recorded, not asserted: this machine's load varies.
const log = openReliabilityLog('load');

let env: TestEnv;
let db: TestDb;
let apiProcess: ServiceProcess;
let url: string;
let auth: Record<string, string>;

beforeAll(async () => {
  env = await createTestEnv();
  const port = await freePort();
  // One user opens the 100 streams: above the default per-user cap of 20, which is not what this measures.
  apiProcess = spawnApi({ ...env.env, PORT: String(port), DATABASE_POOL_SIZE: '10', SSE_HEARTBEAT_MS: '1000', SSE_MAX_STREAMS_PER_USER: '100' });
  await apiProcess.ready;
  url = `http://127.0.0.1:${port}`;
  auth = { Authorization: `Bearer ${await tokenFor('load-user')}` };
  db = openDb(env.databaseUrl);
});

afterAll(async () => {
  await killAll([apiProcess]);
  await db?.close();
  await env?.cleanup();
  log.end();
});

const body = (i: number) =>
  JSON.stringify({ visionId: `load-${i}`, sections: [{ key: 'forward', text: 'I move through the day with ease.' }], variants: ['voice_only'], voice: 'alloy' });

async function createConcurrently(n: number, tag: number): Promise<AutocannonResult> {
  return runAutocannon({
    url: `${url}/v1/audio/batches`,
    connections: n,
    amount: n,
    method: 'POST',
    headers: { ...auth, 'Content-Type': 'application/json' },
    body: body(tag),
  });
}

/** The distinct error messages the API process logged, for a failure message. */
const apiErrors = () =>
  [...new Set(apiProcess.logs.filter((l) => (l.level ?? 0) >= 50).map((l) => {
    const err = l.err as { message?: string; cause?: { message?: string } } | undefined;
    return `${String(err?.message ?? l.msg).split('\n')[0]!.slice(0, 120)}${err?.cause?.message ? ` (cause: ${err.cause.message})` : ''}`;
  }))].slice(0, 5).join(' | ') || 'none';

const batchCount = async () => (await db.one('select count(*)::int as n from audio_generation_batches')).n as number;

describe('load on one API process', () => {
  it('200 concurrent batch creations, 100 open event streams with 200 more creations, 100 cancels at once: no error', async () => {
    await log.scenario(
      '200 concurrent creations; 100 open event streams + 200 more creations; 100 concurrent cancels',
      'one API process (pool 10) hit by 200 simultaneous POST /v1/audio/batches, then 100 SSE streams held open during another 200, then every streamed batch cancelled at once',
      async (r) => {
        const first = await createConcurrently(200, 1);
        expect(first.errors, 'connection errors').toBe(0);
        expect(first.timeouts, 'timeouts').toBe(0);
        expect(first.non2xx, `${JSON.stringify(first.statusCodeStats)}; API errors: ${apiErrors()}`).toBe(0);
        expect(first['2xx']).toBe(200);
        expect(await batchCount()).toBe(200);
        r.held(`200/200 creations answered 201 (p50 ${first.latency.p50} ms, p99 ${first.latency.p99} ms, max ${first.latency.max} ms); 200 batch rows`);

        // 100 event streams on 100 of those batches, all opened at once.
        const ids = (await db.rows('select id from audio_generation_batches order by created_at limit 100')).map((b) => b.id as string);
        const openStarted = Date.now();
        const openTimes: number[] = [];
        const streams: SseStream[] = await Promise.all(
          ids.map(async (id) => {
            const started = Date.now();
            const stream = await openSse(`${url}/v1/audio/batches/${id}/events`, auth);
            await stream.waitFor((e) => e.some((x) => x.event === 'snapshot'), 60_000);
            openTimes.push(Date.now() - started);
            return stream;
          }),
        );
        try {
          const allOpenMs = Date.now() - openStarted;
          // Held open: every stream gets its heartbeat (SSE_HEARTBEAT_MS=1000).
          await waitFor(() => streams.every((s) => s.comments.includes('heartbeat')), { timeoutMs: 30_000, what: 'a heartbeat on all 100 streams' });
          r.held(`100/100 streams opened with a snapshot (p99 ${percentile(openTimes, 99)} ms, all within ${allOpenMs} ms) and kept their heartbeats`);

          const second = await createConcurrently(200, 2);
          expect(second.errors).toBe(0);
          expect(second.timeouts).toBe(0);
          expect(second.non2xx, `${JSON.stringify(second.statusCodeStats)}; API errors: ${apiErrors()}`).toBe(0);
          expect(await batchCount()).toBe(400);
          r.held(`200/200 more creations with 100 streams open answered 201 (p50 ${second.latency.p50} ms, p99 ${second.latency.p99} ms)`);

          // Cancel all 100 streamed batches at once; each stream ends with batch.cancelled.
          const cancelTimes: number[] = [];
          const deliveredAt = new Map<string, number>();
          const cancelled = await Promise.all(
            ids.map(async (id, i) => {
              const started = Date.now();
              const res = await fetch(`${url}/v1/audio/batches/${id}/cancel`, { method: 'POST', headers: auth });
              cancelTimes.push(Date.now() - started);
              const stream = streams[i]!;
              void stream.waitFor((e) => e.some((x) => x.event === 'batch.cancelled'), 60_000).then(() => deliveredAt.set(id, Date.now() - started));
              return res.status;
            }),
          );
          expect(cancelled.every((s) => s === 202), JSON.stringify(cancelled)).toBe(true);
          await Promise.all(streams.map((s) => s.waitFor((e) => e.some((x) => x.event === 'batch.cancelled'), 60_000)));
          await Promise.all(streams.map((s) => s.ended));
          for (const s of streams) {
            expect(s.events[0]!.event).toBe('snapshot');
            expect(s.events.at(-1)!.event).toBe('batch.cancelled');
          }
          await waitFor(() => deliveredAt.size === 100, { timeoutMs: 10_000, what: 'every delivery timed' });
          r.held(`100/100 cancels answered 202 (p99 ${percentile(cancelTimes, 99)} ms); every stream received batch.cancelled (p99 ${percentile([...deliveredAt.values()], 99)} ms after its cancel) and was ended by the server`);

          for (const id of ids.slice(0, 20)) await expectCountersMatchRows(env.databaseUrl, id);
          const statuses = await db.rows(`select status, count(*)::int as n from audio_generation_batches group by status order by status`);
          expect(statuses).toEqual([{ status: 'cancelled', n: 100 }, { status: 'pending', n: 300 }]);
          expect(apiProcess.alive()).toBe(true);
          expect(apiProcess.errors()).toEqual([]);
          expect((await fetch(`${url}/readyz`)).status).toBe(200);
          r.held('400 batches: 100 cancelled, 300 pending, counters equal rows; the API process logged no error and is still ready');

          const p99 = { create: first.latency.p99, createWithStreams: second.latency.p99, streamOpen: percentile(openTimes, 99), cancel: percentile(cancelTimes, 99), eventDelivery: percentile([...deliveredAt.values()], 99) };
          // eslint-disable-next-line no-console
          console.log(`load p99 (ms): ${JSON.stringify(p99)}`);
          r.measure('create p99 ms', p99.create);
          r.measure('create p99 ms (100 streams open)', p99.createWithStreams);
          r.measure('stream open p99 ms', p99.streamOpen);
          r.measure('cancel p99 ms', p99.cancel);
          r.measure('cancel → event p99 ms', p99.eventDelivery);
          r.measure('create max ms', Math.max(first.latency.max, second.latency.max));
          r.measure('requests', 200 + 100 + 200 + 100);
        } finally {
          for (const s of streams) s.close();
        }
      },
    );
  }, 240_000);

  it('a burst that queues behind a slow database waits for it instead of failing', async () => {
    await log.scenario(
      '60 concurrent creations queued more than 5 s behind a locked table',
      'another session held a lock on audio_generation_batches for over 5 s while 60 creations arrived, so all 10 pooled connections waited and 50 requests queued in the pool',
      async (r) => {
        const blocker = new pg.Client({ connectionString: env.databaseUrl });
        await blocker.connect();
        const before = await batchCount();
        let released = false;
        try {
          await blocker.query('begin');
          await blocker.query('lock table audio_generation_batches in share row exclusive mode');
          const sent = Date.now();
          const burst = Promise.all(
            Array.from({ length: 60 }, (_, i) =>
              fetch(`${url}/v1/audio/batches`, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: body(1_000 + i) }).then(async (res) => ({ status: res.status, text: await res.text() })),
            ),
          );
          // Every pooled connection is stuck on the lock, and the queue has waited past the
          // 5 s that used to turn it into 500s.
          await waitFor(async () => (await db.one(`select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()`)).n >= 10, {
            timeoutMs: 30_000,
            what: 'all ten pooled connections waiting on the lock',
          });
          await waitFor(() => Date.now() - sent > 6_000, { timeoutMs: 20_000, intervalMs: 100, what: 'the queue to have waited over 5 s' });
          await blocker.query('commit');
          released = true;
          const answers = await burst;
          const statuses = answers.reduce<Record<number, number>>((acc, a) => ({ ...acc, [a.status]: (acc[a.status] ?? 0) + 1 }), {});
          expect(statuses, answers.find((a) => a.status !== 201)?.text).toEqual({ 201: 60 });
          expect(await batchCount()).toBe(before + 60);
          r.held(`all 60 answered 201 after waiting ${((Date.now() - sent) / 1000).toFixed(1)} s (10 on the lock, 50 in the pool's queue); ${before + 60} batch rows`);
          r.measure('requests', 60);
          r.measure('waited s', Math.round((Date.now() - sent) / 100) / 10);
        } finally {
          if (!released) await blocker.query('rollback').catch(() => {});
          await blocker.end();
        }
      },
    );
  }, 120_000);
});
