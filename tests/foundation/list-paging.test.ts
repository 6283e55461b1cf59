import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { postBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// Newest-first cursor paging must return every row exactly once. PostgreSQL keeps created_at
// to the microsecond: rows made within one millisecond (a client creating several at once)
// are the edge a cursor rounded to milliseconds skipped. The rows' times are set here, so the
// edge is there on every run rather than when the machine happens to be fast enough.
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  env = await createTestEnv();
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

/** Same millisecond, three microseconds, plus one row in the millisecond before and one after. */
const TIMES = ['2026-03-01 10:00:00.001999+00', '2026-03-01 10:00:00.002100+00', '2026-03-01 10:00:00.002500+00', '2026-03-01 10:00:00.002900+00', '2026-03-01 10:00:00.003000+00'];

async function setTimes(table: string, ids: string[]): Promise<void> {
  for (const [i, id] of ids.entries()) await queryRows(env.databaseUrl, `update ${table} set created_at = $1 where id = $2`, [TIMES[i], id]);
}

/** Follows the cursor one row at a time; every id the pages gave, in order. */
async function pageThrough(path: (cursor: string | null) => string, user: string, list: string, next: string, idOf: (row: any) => string): Promise<string[]> {
  const seen: string[] = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < 20; pages++) {
    const res = await api.request(path(cursor), { user });
    expect(res.status).toBe(200);
    const page = await readJson(res);
    seen.push(...page[list].map(idOf));
    cursor = page[next];
    if (!cursor) return seen;
  }
  throw new Error('paging did not end');
}

describe('cursor paging over rows made within one millisecond', () => {
  it('batches: every one exactly once, newest first', async () => {
    const ids: string[] = [];
    for (let i = 0; i < TIMES.length; i++) {
      const res = await createBatch(api, { visionId: 'same-ms', sections: sampleSections(1), variants: ['voice_only'], voice: 'alloy' }, { user: 'pager' });
      expect(res.status).toBe(201);
      ids.push(res.body.id);
    }
    await setTimes('audio_generation_batches', ids);
    const seen = await pageThrough((c) => `/v1/audio/batches?visionId=same-ms&limit=1${c ? `&cursor=${c}` : ''}`, 'pager', 'batches', 'next_cursor', (b) => b.id);
    expect(seen).toEqual([...ids].reverse());
  });

  it('books: every one exactly once, newest first', async () => {
    const ids: string[] = [];
    for (let i = 0; i < TIMES.length; i++) {
      const res = await postBook(api, { title: `Book ${i}`, pages: ['a forest at dawn', 'the sea at night'] }, 'pager');
      expect(res.status).toBe(202);
      ids.push(res.body.bookId);
    }
    await setTimes('books', ids);
    const seen = await pageThrough((c) => `/v1/books?limit=1${c ? `&cursor=${c}` : ''}`, 'pager', 'books', 'nextCursor', (b) => b.bookId);
    expect(seen).toEqual([...ids].reverse());
  });

  it('a cursor an earlier version returned (milliseconds) still pages', async () => {
    // The newest row is at 10:00:00.003000 exactly, its id above this one: not after the cursor.
    const cursor = Buffer.from('2026-03-01T10:00:00.003Z|00000000-0000-4000-8000-000000000000').toString('base64url');
    const res = await api.request(`/v1/audio/batches?visionId=same-ms&limit=10&cursor=${cursor}`, { user: 'pager' });
    expect(res.status).toBe(200);
    // The four rows before it.
    expect((await readJson(res)).batches).toHaveLength(4);
  });
});

describe('a listed batch', () => {
  it("shows each section's key and title, in order, as the batch itself does", async () => {
    const sections = [
      { key: 'intro', title: 'Intro', text: 'The first text.' },
      { key: 'middle', text: 'A section with no title.' },
      { key: 'close', title: 'Ünïcode ✓', text: 'The last text.' },
    ];
    const res = await createBatch(api, { visionId: 'listed', sections, variants: ['voice_only'], voice: 'alloy' }, { user: 'lister' });
    expect(res.status).toBe(201);
    const list = await readJson(await api.request('/v1/audio/batches?vision_id=listed', { user: 'lister' }));
    const one = await readJson(await api.request(`/v1/audio/batches/${res.body.id}`, { user: 'lister' }));
    const expected = [
      { key: 'intro', title: 'Intro' },
      { key: 'middle', title: null },
      { key: 'close', title: 'Ünïcode ✓' },
    ];
    expect(one.sections_requested).toEqual(expected);
    expect(list.batches.map((b: any) => b.sections_requested)).toEqual([expected]);
  });
});

describe('page sizes', () => {
  it('take a limit written in digits only, as every number setting is; 1e1, 0x10, 5.0 or " 5" answer 400', async () => {
    // z.coerce.number read "1e1" as 10 and "0x10" as 16, where the configuration refuses such
    // spellings: one rule for a number a person writes.
    const lists = ['/v1/audio/batches', '/v1/books', '/v1/admin/batches?status=active'];
    for (const list of lists) {
      const at = (limit: string) => `${list}${list.includes('?') ? '&' : '?'}limit=${encodeURIComponent(limit)}`;
      const as = list.startsWith('/v1/admin') ? { user: null, headers: { Authorization: `Bearer ${await tokenFor('ops', { role: 'admin' })}` } } : { user: 'pager' };
      expect((await api.request(at('5'), as)).status, list).toBe(200);
      for (const limit of ['1e1', '0x10', '5.0', ' 5', '+5', '05e0']) {
        const res = await api.request(at(limit), as);
        expect(res.status, `${list} limit=${limit}`).toBe(400);
        expect((await readJson(res)).error).toMatchObject({ code: 'validation_failed', message: expect.stringContaining('limit') });
      }
    }
  });
});
