import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, type TestApi } from '../helpers/app';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// GET /v1/admin/analytics against rows written straight into the database, so every figure
// can be worked out by hand.
const SERVICE_TOKEN = 'analytics-service-token';

let env: TestEnv;
let api: TestApi | undefined;

beforeAll(async () => {
  env = await createTestEnv({ AUTH_SERVICE_TOKEN: SERVICE_TOKEN });
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const analytics = async (query: string) => {
  const res = await fetch(`${api!.url}/v1/admin/analytics?${query}`, { headers: { Authorization: `Bearer ${SERVICE_TOKEN}` } });
  expect(res.status).toBe(200);
  return readJson(res);
};

async function providerCall(provider: string, costUsd: number, createdAt: string, outcome = 'ok') {
  await queryRows(
    env.databaseUrl,
    `insert into provider_calls (user_id, provider, kind, units, unit_type, cost_usd, latency_ms, outcome, created_at)
     values ('u', $1, 'speech', 1000, 'characters', $2, 100, $4, $3)`,
    [provider, costUsd, createdAt, outcome],
  );
}

describe('GET /v1/admin/analytics', () => {
  it('counts cost per UTC day, as `since` is read, whatever the database time zone', async () => {
    // A server (or database) configured for local time is common; date_trunc on a timestamptz
    // cuts days in the session's time zone.
    const dbName = new URL(env.databaseUrl).pathname.slice(1);
    await queryRows(env.databaseUrl, `alter database "${dbName}" set timezone to 'America/Los_Angeles'`);
    api = await startTestApi(env.config);
    expect((await queryRows(env.databaseUrl, 'show timezone'))[0].TimeZone).toBe('America/Los_Angeles');
    await providerCall('openai', 0.5, '2026-11-01T03:00:00Z'); // 31 October, 20:00 in Los Angeles
    await providerCall('openai', 0.25, '2026-11-02T23:30:00Z'); // 2 November, 15:30 there
    await providerCall('openai', 1, '2026-10-31T23:59:59Z'); // before `since`
    const a = await analytics('since=2026-11-01');
    expect(a.since).toBe('2026-11-01T00:00:00.000Z');
    expect(a.cost_per_day).toEqual([
      { day: '2026-11-01', provider: 'openai', cost_usd: 0.5 },
      { day: '2026-11-02', provider: 'openai', cost_usd: 0.25 },
    ]);
  });

  it('counts provider calls per outcome: one we aborted (its job\'s claim taken) apart from a provider\'s failure', async () => {
    api ??= await startTestApi(env.config);
    // Hours ago, after the other tests' rows (`since` may not be later than now).
    const since = Date.now() - 6 * 3_600_000;
    const hoursAfter = (hours: number) => new Date(since + hours * 3_600_000).toISOString();
    await providerCall('gemini', 0.5, hoursAfter(1));
    await providerCall('gemini', 0.25, hoursAfter(2));
    await providerCall('gemini', 0, hoursAfter(3), 'error');
    await providerCall('gemini', 0, hoursAfter(4), 'aborted');
    await providerCall('gemini', 0, hoursAfter(5), 'aborted');
    const a = await analytics(`since=${new Date(since).toISOString()}`);
    expect(a.provider_calls).toEqual([
      { provider: 'gemini', kind: 'speech', outcome: 'aborted', calls: 2, cost_usd: 0 },
      { provider: 'gemini', kind: 'speech', outcome: 'error', calls: 1, cost_usd: 0 },
      { provider: 'gemini', kind: 'speech', outcome: 'ok', calls: 2, cost_usd: 0.75 },
    ]);
  });

  it('averages generation time over the batches that generated, with p95 over the same', async () => {
    api ??= await startTestApi(env.config);
    const base = Date.now() - 3_600_000; // an hour ago: `since` may not be later than now
    // status, seconds from creation to start (null: no track ever started) and to the end, counters.
    const rows: Array<[string, number | null, number | null, number, number, number]> = [
      ['completed', 1, 11, 2, 0, 0],
      ['completed', 1, 21, 2, 0, 0],
      ['partial_success', 1, 31, 1, 1, 0],
      ['failed', 1, 41, 0, 2, 0],
      // Never generated anything: Redis refused the flow (recorded failed at once), and a
      // batch cancelled before its first track started. Neither has a generation time.
      ['failed', null, 5, 0, 2, 0],
      ['cancelled', null, 3, 0, 0, 2],
      ['processing', 1, null, 1, 0, 0],
    ];
    for (const [i, [status, started, completed, done, failed, cancelled]] of rows.entries()) {
      const created = base + i * 1000;
      await queryRows(
        env.databaseUrl,
        `insert into audio_generation_batches (user_id, vision_id, status, variant_ids, voice_id, model, sections_requested, total_tracks_expected,
           tracks_completed, tracks_failed, tracks_cancelled, tracks_pending, request_hash, started_at, completed_at, created_at)
         values ('u', 'v', $1, '[]', 'alloy', 'm', '[]', 2, $2, $3, $4, $5, 'h', $6, $7, $8)`,
        [status, done, failed, cancelled, 2 - done - failed - cancelled, started === null ? null : new Date(created + started * 1000), completed === null ? null : new Date(created + completed * 1000), new Date(created)],
      );
    }
    const a = await analytics(`since=${new Date(base).toISOString()}`);
    expect(a.batches).toMatchObject({ finished: 6, active: 1, completed: 2, partial_success: 1, failed: 2 });
    expect(a.batches.success_rate).toBeCloseTo(2 / 6, 9);
    // Generation took 10, 20, 30 and 40 s; p95 interpolated between the two longest.
    expect(a.batches.avg_generation_seconds).toBeCloseTo(25, 6);
    expect(a.batches.p95_generation_seconds).toBeCloseTo(30 + 0.85 * 10, 6);
    expect(a.tracks).toEqual({ completed: 6, failed: 5, success_rate: 6 / 11 });
  });

  it('refuses a `since` that is neither a date nor a date-time, saying what it must be', async () => {
    api ??= await startTestApi(env.config);
    const res = await fetch(`${api.url}/v1/admin/analytics?since=yesterday`, { headers: { Authorization: `Bearer ${SERVICE_TOKEN}` } });
    expect(res.status).toBe(400);
    const body = await readJson(res);
    expect(body.error.code).toBe('validation_failed');
    expect(body.error.message).toBe('query.since: must be an ISO 8601 date (2026-11-01) or date-time (2026-11-01T00:00:00Z)');
  });

  it('refuses a `since` whose instant falls outside the years 0001–9999, which the answer could not write plainly', async () => {
    api ??= await startTestApi(env.config);
    for (const since of ['9999-12-31T23:30:00-01:00', '0000-01-01', '0001-01-01T00:30:00+01:00']) {
      const res = await fetch(`${api.url}/v1/admin/analytics?since=${encodeURIComponent(since)}`, { headers: { Authorization: `Bearer ${SERVICE_TOKEN}` } });
      expect(res.status, since).toBe(400);
      expect((await readJson(res)).error.message).toBe('query.since: must fall within the years 0001 to 9999 (UTC)');
    }
  });

  it('refuses a `since` after now, which would count an empty period, saying so', async () => {
    api ??= await startTestApi(env.config);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    for (const since of ['9999-12-31', tomorrow, new Date(Date.now() + 60_000).toISOString(), '2999-01-01T00:00:00+14:00']) {
      const res = await fetch(`${api.url}/v1/admin/analytics?since=${encodeURIComponent(since)}`, { headers: { Authorization: `Bearer ${SERVICE_TOKEN}` } });
      expect(res.status, since).toBe(400);
      const body = await readJson(res);
      expect(body.error.code).toBe('validation_failed');
      expect(body.error.message).toBe('query.since: must not be later than now (the figures count from since until now)');
      expect(body.error.details).toEqual([{ path: 'query.since', message: 'must not be later than now (the figures count from since until now)' }]);
    }
    // Today, and a moment ago, are fine.
    for (const since of [new Date().toISOString().slice(0, 10), new Date(Date.now() - 1_000).toISOString()]) {
      expect((await analytics(`since=${encodeURIComponent(since)}`)).since, since).toBe(new Date(since).toISOString());
    }
  });
});
