import { expect } from 'vitest';
import pg from 'pg';
import type { TestApi } from './app';
import { readJson } from './app';
import { waitFor } from './wait';

export const SECTION_KEYS = [
  'forward', 'fun_recreation', 'health_vitality', 'travel_adventure', 'career', 'finances', 'relationships',
  'family', 'home', 'learning', 'creativity', 'community', 'spirituality', 'conclusion',
];

/** A vision of `n` short sections (short so 42 tracks mix quickly on two cores). */
export function sampleSections(n = 14, prefix = 'I') {
  return SECTION_KEYS.slice(0, n).map((key, i) => ({
    key,
    title: key.replace(/_/g, ' '),
    text: `${prefix} see my ${key.replace(/_/g, ' ')} growing stronger every day. Section ${i + 1}.`,
  }));
}

export async function createBatch(api: TestApi, body: unknown, options: { user?: string; headers?: Record<string, string> } = {}) {
  const res = await api.request('/v1/audio/batches', { method: 'POST', json: body, user: options.user, headers: options.headers });
  return { status: res.status, body: await readJson(res) };
}

export async function getBatch(api: TestApi, id: string, user = 'user-a') {
  const res = await api.request(`/v1/audio/batches/${id}`, { user });
  expect(res.status).toBe(200);
  return readJson(res);
}

const TERMINAL = ['completed', 'partial_success', 'failed', 'cancelled'];

export async function waitForTerminal(api: TestApi, id: string, options: { timeoutMs?: number; onPoll?: (batch: any) => void | Promise<void> } = {}) {
  return waitFor(
    async () => {
      const batch = await getBatch(api, id);
      await options.onPoll?.(batch);
      return TERMINAL.includes(batch.status) ? batch : null;
    },
    { timeoutMs: options.timeoutMs ?? 120_000, intervalMs: 200, what: `batch ${id} to finish` },
  );
}

/**
 * DESIGN.md invariant 1, read in one snapshot: the counters add up to the total and each
 * equals the count of its track rows.
 */
export async function expectCountersMatchRows(databaseUrl: string, batchId: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query('begin isolation level repeatable read');
    const batch = (await client.query('select * from audio_generation_batches where id = $1', [batchId])).rows[0];
    const counts = (await client.query(`select status, count(*)::int as n from audio_tracks where batch_id = $1 group by status`, [batchId])).rows as { status: string; n: number }[];
    await client.query('commit');
    const of = (...statuses: string[]) => counts.filter((c) => statuses.includes(c.status)).reduce((a, c) => a + c.n, 0);
    expect(batch.tracks_completed + batch.tracks_failed + batch.tracks_cancelled + batch.tracks_pending).toBe(batch.total_tracks_expected);
    expect(batch.tracks_completed).toBe(of('completed'));
    expect(batch.tracks_failed).toBe(of('failed'));
    expect(batch.tracks_cancelled).toBe(of('cancelled'));
    expect(batch.tracks_pending).toBe(of('pending', 'generating', 'mixing'));
  } finally {
    await client.end();
  }
}
