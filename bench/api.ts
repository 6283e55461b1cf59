import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { startTestApi, tokenFor } from '../tests/helpers/app';
import { createTestEnv } from '../tests/helpers/services';
import { batchBody } from './lib/audio-flow';
import { BENCH_DIR, epochMs, median, onCleanup, percentile, round, run, withTimeout, type BenchOptions, type BenchResult } from './lib/common';

// Benchmark 4: the API under load. autocannon (in its own process) against the real Express
// app in this process, with no worker: creating batches (rows + the flow enqueued), reading
// one batch with its 42 tracks, listing batches; GET /healthz on the same server is the
// baseline the others are a ratio of. Then event-stream fan-out: N clients (in another
// process) on one batch's stream, and the time from publishing an event (the notifier the
// workers use: Redis stream + pub/sub) to its arrival at every client.

const USER = 'bench-user';

interface Load {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  non2xx: number;
  errors: number;
}

async function autocannon(url: string, options: { seconds: number; connections: number; method?: string; headers?: Record<string, string>; body?: string }): Promise<Load> {
  const bin = createRequire(import.meta.url).resolve('autocannon');
  const args = [bin, '-j', '-n', '-c', String(options.connections), '-d', String(options.seconds), '-m', options.method ?? 'GET'];
  for (const [k, v] of Object.entries(options.headers ?? {})) args.push('-H', `${k}=${v}`);
  if (options.body) args.push('-b', options.body);
  args.push(url);
  const { stdout } = await run(process.execPath, args);
  const r = JSON.parse(stdout) as {
    requests: { average: number; total: number };
    latency: { p50: number; p99: number };
    non2xx: number;
    errors: number;
  };
  return { requestsPerSecond: round(r.requests.average, 1), p50Ms: r.latency.p50, p99Ms: r.latency.p99, requests: r.requests.total, non2xx: r.non2xx, errors: r.errors };
}

interface FanOut {
  clients: number;
  /** The SSE process's clock minus this one's, and the round trip that measured it. */
  clockOffsetMs: number;
  clockSyncRoundTripMs: number;
  connectSeconds: number;
  events: number;
  /** Per event: ms from publish to the last client's arrival. */
  allArrivedMs: number[];
  /** Over every (event, client): ms from publish to arrival. */
  perClientP50Ms: number;
  perClientP99Ms: number;
}

async function fanOut(api: Awaited<ReturnType<typeof startTestApi>>, batchId: string, token: string, clients: number, events: number): Promise<FanOut> {
  const child = fork(join(BENCH_DIR, 'lib', 'sse-clients.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const stop = onCleanup(`sse clients ${child.pid}`, () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  try {
    const inbox: Array<Record<string, any>> = [];
    let wake: (() => void) | undefined;
    let failed: Error | undefined;
    child.on('message', (m: Record<string, any>) => {
      if (m.type === 'error') failed ??= new Error(String(m.message));
      inbox.push(m);
      wake?.();
    });
    child.on('exit', (code) => {
      failed ??= new Error(`sse client process exited (${code})`);
      wake?.();
    });
    const next = async (type: string, ms: number) =>
      withTimeout(
        (async () => {
          for (;;) {
            if (failed) throw failed;
            const i = inbox.findIndex((m) => m.type === type);
            if (i >= 0) return inbox.splice(i, 1)[0]!;
            await new Promise<void>((resolve) => (wake = resolve));
          }
        })(),
        ms,
        `sse clients: ${type}`,
      );

    // The child's clock minus ours, from the round trip with the shortest time in flight (as
    // NTP does): its arrival times are moved onto our clock before they are compared with ours.
    let offset = 0;
    let bestRtt = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 20; i += 1) {
      child.send({ type: 'sync', parent: epochMs() });
      const reply = await next('sync', 10_000);
      const back = epochMs();
      const rtt = back - reply.parent;
      if (rtt < bestRtt) {
        bestRtt = rtt;
        offset = reply.child - (reply.parent + rtt / 2);
      }
    }
    child.send({ type: 'start', url: `${api.url}/v1/audio/batches/${batchId}/events`, token, clients });
    const ready = await next('ready', 60_000);
    const allArrivedMs: number[] = [];
    const perClient: number[] = [];
    for (let seq = 0; seq < events; seq += 1) {
      const sent = epochMs();
      await api.ctx.publish([{ subject: { kind: 'batch', id: batchId }, type: 'bench.ping', data: { seq } }]);
      const arrived = await next('arrived', 30_000);
      const lat = (arrived.arrivals as number[]).map((t) => t - offset - sent);
      allArrivedMs.push(Math.max(...lat));
      perClient.push(...lat);
    }
    return {
      clients,
      clockOffsetMs: round(offset, 3),
      clockSyncRoundTripMs: round(bestRtt, 3),
      connectSeconds: round(ready.connectMs / 1000, 2),
      events,
      allArrivedMs: allArrivedMs.map((v) => round(v, 1)),
      perClientP50Ms: round(percentile(perClient, 50), 1),
      perClientP99Ms: round(percentile(perClient, 99), 1),
    };
  } finally {
    await stop();
  }
}

export async function api(options: BenchOptions): Promise<BenchResult> {
  const seconds = options.quick ? 1 : 10;
  const connections = 10;
  const clients = options.quick ? 200 : 1_000;
  const events = options.quick ? 3 : 10;

  // Every stream client is the one bench user: the per-user stream cap (default 20) is moved
  // out of the way, as this measures fan-out, not the cap.
  const env = await createTestEnv({ LOG_LEVEL: 'error', DATABASE_POOL_SIZE: '10', SSE_MAX_STREAMS_PER_USER: '1000000' });
  onCleanup(`api env ${env.prefix}`, () => env.cleanup());
  const app = await startTestApi(env.config);
  onCleanup('api server', () => app.close());
  const token = await tokenFor(USER, { expiresIn: '2h' });
  const auth = { Authorization: `Bearer ${token}` };

  // Something to read: one batch of 14 sections × 3 variants (42 tracks) and 20 more to list.
  const body = batchBody('api', 0, 14, ['voice_only', 'sleep', 'focus']);
  const seeded = await app.request('/v1/audio/batches', { method: 'POST', json: body, user: USER });
  const batch = (await seeded.json()) as { id: string };
  if (seeded.status !== 201) throw new Error(`seeding a batch answered ${seeded.status}`);
  for (let i = 1; i <= 20; i += 1) await app.request('/v1/audio/batches', { method: 'POST', json: batchBody('api', i, 2), user: USER });

  const load = { seconds, connections };
  const healthz = await autocannon(`${app.url}/healthz`, load);
  const create = await autocannon(`${app.url}/v1/audio/batches`, {
    ...load,
    method: 'POST',
    headers: { ...auth, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const read = await autocannon(`${app.url}/v1/audio/batches/${batch.id}`, { ...load, headers: auth });
  const list = await autocannon(`${app.url}/v1/audio/batches?limit=20`, { ...load, headers: auth });

  const single = await fanOut(app, batch.id, token, 1, events);
  const many = await fanOut(app, batch.id, token, clients, events);
  const fanMedian = median(many.allArrivedMs);
  const singleMedian = median(single.allArrivedMs);

  const row = (name: string, l: Load) => ({
    benchmark: '4 api',
    measure: `${name}: req/s (× healthz), p50 / p99 ms`,
    value: `${l.requestsPerSecond} (${round(l.requestsPerSecond / healthz.requestsPerSecond, 2)}), ${l.p50Ms} / ${l.p99Ms}${l.non2xx || l.errors ? `, ${l.non2xx} non-2xx ${l.errors} errors` : ''}`,
    target: '',
    met: l.non2xx || l.errors ? false : null,
  });
  return {
    name: 'api',
    headlines: [
      row('POST /v1/audio/batches (42 tracks)', create),
      row('GET /v1/audio/batches/:id (42 tracks)', read),
      row('GET /v1/audio/batches?limit=20', list),
      { benchmark: '4 api', measure: 'GET /healthz (baseline): req/s, p50 / p99 ms', value: `${healthz.requestsPerSecond}, ${healthz.p50Ms} / ${healthz.p99Ms}`, target: '', met: null },
      {
        benchmark: '4 api',
        measure: `SSE event to all ${clients} clients, median ms (1 client)`,
        value: `${round(fanMedian, 1)} (${round(singleMedian, 1)})`,
        target: '',
        met: null,
      },
    ],
    notes: [
      `autocannon in a child process, ${connections} connections, ${seconds} s per route, against the API in this process (no worker; creates enqueue flows nobody runs).`,
      `SSE: ${clients} clients connected (each with its snapshot) in ${many.connectSeconds} s; ${events} events; per event, publish → last client: ${many.allArrivedMs.join(', ')} ms; per client p50 ${many.perClientP50Ms} ms, p99 ${many.perClientP99Ms} ms.`,
    ],
    data: {
      connections,
      secondsPerRoute: seconds,
      routes: { healthz, create, read, list },
      ratiosToHealthz: {
        create: round(create.requestsPerSecond / healthz.requestsPerSecond, 3),
        read: round(read.requestsPerSecond / healthz.requestsPerSecond, 3),
        list: round(list.requestsPerSecond / healthz.requestsPerSecond, 3),
      },
      fanOut: { single, many, medianAllArrivedMs: round(fanMedian, 2), singleClientMedianMs: round(singleMedian, 2) },
    },
  };
}
