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

async function providerCall(provider: string, costUsd: number, createdAt: string) {
  await queryRows(
    env.databaseUrl,
    `insert into provider_calls (user_id, provider, kind, units, unit_type, cost_usd, latency_ms, outcome, created_at)
     values ('u', $1, 'speech', 1000, 'characters', $2, 100, 'ok', $3)`,
    [provider, costUsd, createdAt],
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
});
