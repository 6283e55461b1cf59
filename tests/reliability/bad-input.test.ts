import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { variantIds } from '@soundqueue/shared/variants';
import { voiceIds } from '@soundqueue/shared/voices';
import { webhookEventTypes } from '@soundqueue/shared/webhooks';
import { MAX_BATCH_BODY_BYTES } from '../../apps/api/src/batches/batch-request';
import { startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { openDb, type TestDb } from '../helpers/chaos';
import { openReliabilityLog } from '../helpers/reliability-log';
import { createTestEnv, type TestEnv } from '../helpers/services';

// Every POST route with bodies fast-check makes up (random JSON, near-valid requests with one
// thing wrong, random uploads), plus the edges by hand: oversize bodies, wrong content types,
// malformed ids, unicode and very long texts, duplicate keys, NUL and lone surrogates. The
// API must never answer 5xx, and a 4xx must write nothing: rows and root jobs are counted
// before and after every request.
const log = openReliabilityLog('bad-input');

const MAX_UPLOAD = 64 * 1024;
const RUNS = Number(process.env.RELIABILITY_FUZZ_RUNS ?? 200);
let env: TestEnv;
let api: TestApi;
let db: TestDb;
let token: string;

beforeAll(async () => {
  env = await createTestEnv({ BOOK_MAX_UPLOAD_BYTES: String(MAX_UPLOAD), BOOK_MAX_PAGES: '40' });
  api = await startTestApi(env.config);
  db = openDb(env.databaseUrl);
  token = await tokenFor('fuzzer');
});

afterAll(async () => {
  await api?.close();
  await db?.close();
  await env?.cleanup();
  log.end();
});

/** Every row the API could write, and the root jobs it could enqueue. */
async function snapshot(): Promise<string> {
  const rows = await db.one(`select
    (select count(*) from audio_generation_batches) as batches, (select count(*) from audio_sets) as sets,
    (select count(*) from audio_tracks) as tracks, (select count(*) from voice_renditions) as renditions,
    (select count(*) from books) as books, (select count(*) from book_spreads) as spreads,
    (select count(*) from scenes) as scenes, (select count(*) from soundscapes) as soundscapes,
    (select count(*) from provider_calls) as calls, (select count(*) from webhook_endpoints) as webhooks,
    (select count(*) from webhook_deliveries) as deliveries,
    (select coalesce(sum(tracks_cancelled), 0) from audio_generation_batches) as cancelled,
    (select coalesce(sum(run), 0) from audio_generation_batches) as runs`);
  const jobs = await Promise.all(['audio-batch', 'book', 'webhooks'].map((q) => api.ctx.queues[q as 'book'].getJobCountByTypes('waiting', 'waiting-children', 'delayed', 'active', 'completed', 'failed')));
  return JSON.stringify({ ...rows, jobs });
}

interface Outcome {
  status: number;
  body: any;
}

const stats = { requests: 0, byStatus: new Map<number, number>() };

/** Sends one request and holds the contract: no 5xx, the error shape on 4xx, and no write on 4xx. */
async function send(method: string, path: string, init: { body?: RequestInit['body']; headers?: Record<string, string> } = {}): Promise<Outcome> {
  const before = await snapshot();
  const res = await fetch(`${api.url}${path}`, { method, body: init.body, headers: { Authorization: `Bearer ${token}`, ...init.headers } });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON; checked below for error answers
  }
  stats.requests++;
  stats.byStatus.set(res.status, (stats.byStatus.get(res.status) ?? 0) + 1);
  const where = `${method} ${path.slice(0, 120)} ${String(init.headers?.['Content-Type'] ?? '')} body=${typeof init.body === 'string' ? init.body.slice(0, 300) : '(binary)'} → ${res.status} ${text.slice(0, 300)}`;
  expect(res.status, where).toBeLessThan(500);
  if (res.status >= 400) {
    expect(typeof body?.error?.code, where).toBe('string');
    expect(typeof body?.error?.message, where).toBe('string');
    expect(await snapshot(), `a ${res.status} wrote something: ${where}`).toBe(before);
  }
  return { status: res.status, body };
}

const postJson = (path: string, value: unknown, headers: Record<string, string> = {}) =>
  send('POST', path, { body: typeof value === 'string' ? value : JSON.stringify(value), headers: { 'Content-Type': 'application/json', ...headers } });

// Strings that have broken APIs before: NUL, lone surrogates, RTL and combining marks,
// astral characters, traversal, SQL and very long runs.
const nasty = fc.constantFrom(
  '', ' ', '\u0000', 'a\u0000b', '\ud800', 'x\udfffy', '\u202eevil', 'e\u0301\u0301\u0301', '😀'.repeat(3), '𝕳𝖊𝖑𝖑𝖔',
  '../../etc/passwd', "'; drop table books; --", '%00', '\\', 'null', 'ǅ', '\t\n\r', 'A'.repeat(300),
);
const anyText = fc.oneof(fc.string({ unit: 'binary', maxLength: 60 }), nasty, fc.string({ maxLength: 30 }));
const anyJson = fc.oneof({ depthSize: 'small' }, fc.jsonValue({ maxDepth: 3 }), fc.anything({ maxDepth: 2 }).map((v) => JSON.parse(JSON.stringify(v ?? null) ?? 'null')));

// Valid requests, and the same requests with one thing broken: fast-check explores the
// space next to the valid one, where validation bugs live, instead of mostly random noise.
const graphemes = (minLength: number, maxLength: number) => fc.string({ unit: 'grapheme', minLength, maxLength });
const spoken = graphemes(1, 80).filter((t) => t.trim().length > 0);
const validSection = fc.record({
  key: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,20}$/),
  title: fc.option(graphemes(0, 40), { nil: undefined }),
  text: spoken,
});
const validBatch = fc.record({
  visionId: graphemes(1, 40),
  sections: fc.uniqueArray(validSection, { minLength: 1, maxLength: 14, selector: (section) => section.key }),
  variants: fc.uniqueArray(fc.constantFrom(...variantIds), { minLength: 1, maxLength: variantIds.length }),
  voice: fc.constantFrom(...voiceIds),
});
const validBook = fc.record({
  title: graphemes(1, 60).filter((t) => t.trim().length > 0),
  author: fc.option(graphemes(0, 40), { nil: undefined }),
  pages: fc.array(spoken, { minLength: 1, maxLength: 6 }),
});
const PUBLIC_IPS = ['93.184.216.34', '8.8.8.8', '1.1.1.1', '151.101.1.69'];
const validHook = fc.record({
  url: fc.tuple(fc.constantFrom(...PUBLIC_IPS), fc.stringMatching(/^[a-z0-9/_-]{0,30}$/)).map(([ip, path]) => `https://${ip}/${path}`),
  events: fc.uniqueArray(fc.constantFrom(...webhookEventTypes), { minLength: 1 }),
});

type Mutation = { kind: 'none' } | { kind: 'drop' | 'replace'; path: string[]; value?: unknown } | { kind: 'extra'; value: unknown };

/** One valid request, possibly with one field dropped or replaced by something bad. */
function mutated<T extends object>(valid: fc.Arbitrary<T>, paths: string[][], bad: fc.Arbitrary<unknown>): fc.Arbitrary<{ body: unknown; mutation: Mutation }> {
  const mutation: fc.Arbitrary<Mutation> = fc.oneof(
    fc.constant({ kind: 'none' as const }),
    fc.record({ kind: fc.constant('drop' as const), path: fc.constantFrom(...paths) }),
    fc.record({ kind: fc.constant('replace' as const), path: fc.constantFrom(...paths), value: bad }),
    fc.record({ kind: fc.constant('extra' as const), value: bad }),
  );
  return fc.tuple(valid, mutation).map(([body, m]) => {
    const copy = structuredClone(body) as any;
    if (m.kind === 'extra') copy.unexpected = m.value;
    if (m.kind === 'drop' || m.kind === 'replace') {
      let target = copy;
      for (const key of m.path.slice(0, -1)) target = target?.[key];
      if (target && typeof target === 'object') {
        const last = m.path.at(-1)!;
        if (m.kind === 'drop') delete target[last];
        else target[last] = m.value;
      }
    }
    return { body: copy, mutation: m };
  });
}

const badValue = fc.oneof(anyJson, nasty, fc.constant(null), fc.constant([]), fc.constant({}), fc.integer(), fc.string({ unit: 'binary', maxLength: 30 }));
const batchArb = mutated(
  validBatch,
  [['visionId'], ['sections'], ['variants'], ['voice'], ['model'], ['sections', '0'], ['sections', '0', 'key'], ['sections', '0', 'text'], ['sections', '0', 'title'], ['variants', '0']],
  fc.oneof(badValue, fc.constant('a'), fc.constantFrom(...variantIds), fc.constant('x'.repeat(20_001))),
);

describe('property-based bodies at every POST route', () => {
  it('POST /v1/audio/batches: never 5xx, nothing written on 4xx', async () => {
    await log.scenario(
      `POST /v1/audio/batches × ${RUNS * 2} fast-check bodies (valid batches with one field broken, random JSON, raw text)`,
      'request bodies generated by fast-check: valid batches with one field dropped or replaced (wrong types, nasty strings, too long, unknown variants), extra fields, random JSON, raw non-JSON, random Idempotency-Keys',
      async (r) => {
        const seen = new Map<number, number>();
        await fc.assert(
          fc.asyncProperty(
            fc.oneof(batchArb, anyJson.map((body) => ({ body, mutation: { kind: 'extra' as const, value: null } as Mutation }))),
            // A few keys, reused across runs: the same key with another body must be a 409 that writes nothing.
            fc.option(fc.constantFrom('key-1', 'key-2', 'key-3'), { nil: undefined, freq: 3 }),
            async ({ body, mutation }, key) => {
              const out = await postJson('/v1/audio/batches', body, key ? { 'Idempotency-Key': key } : {});
              seen.set(out.status, (seen.get(out.status) ?? 0) + 1);
              // A valid request is accepted: created, or (same key) the earlier batch or a 409.
              if (mutation.kind === 'none') expect(key ? [200, 201, 409] : [201], JSON.stringify(body).slice(0, 300)).toContain(out.status);
            },
          ),
          { numRuns: RUNS, endOnFailure: true },
        );
        await fc.assert(
          fc.asyncProperty(fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.constantFrom('{', '{"visionId":', '[1,2', 'nul', '{"a":1}}', '\u0000')), fc.option(fc.string({ minLength: 1, maxLength: 20 }), { nil: undefined }), async (raw, key) => {
            const out = await postJson('/v1/audio/batches', raw, key ? { 'Idempotency-Key': key } : {});
            seen.set(out.status, (seen.get(out.status) ?? 0) + 1);
          }),
          { numRuns: RUNS, endOnFailure: true },
        );
        r.held(`no 5xx; every valid batch 201; every 4xx wrote nothing; statuses ${JSON.stringify(Object.fromEntries(seen))}`);
        r.measure('requests', RUNS * 2);
      },
    );
  }, 240_000);

  it('POST /v1/audio/batches/:id/retry and /cancel: never 5xx, nothing written on 4xx', async () => {
    await log.scenario(
      `POST /v1/audio/batches/:id/retry and /cancel × ${RUNS} fast-check ids and bodies`,
      'ids that are random strings, traversal, uuids of nobody, and real batches; random bodies and content types',
      async (r) => {
        const real = await postJson('/v1/audio/batches', { visionId: 'fuzz-target', sections: [{ key: 'a', text: 'Hello there.' }], variants: ['voice_only'], voice: 'alloy' });
        expect(real.status).toBe(201);
        const seen = new Map<number, number>();
        const idArb = fc.oneof(fc.uuid(), fc.constant(real.body.id as string), fc.string({ maxLength: 40 }), nasty);
        await fc.assert(
          fc.asyncProperty(idArb, fc.constantFrom('retry', 'cancel'), anyJson, fc.constantFrom('application/json', 'text/plain', 'application/xml', ''), async (id, action, body, type) => {
            // A URL cannot carry an unpaired surrogate: it goes as U+FFFD (what a browser sends).
            const inPath = encodeURIComponent(id.replace(/[\ud800-\udfff]/g, (c, i) => (/[\ud800-\udbff][\udc00-\udfff]/.test(id.slice(i - 1, i + 1)) || /[\ud800-\udbff][\udc00-\udfff]/.test(id.slice(i, i + 2)) ? c : '\ufffd')));
            const out = await send('POST', `/v1/audio/batches/${inPath}/${action}`, {
              body: JSON.stringify(body),
              headers: type ? { 'Content-Type': type } : {},
            });
            seen.set(out.status, (seen.get(out.status) ?? 0) + 1);
            // An unknown or malformed id is 404; a JSON body the parser refuses is 400 first.
            if (id !== real.body.id) expect(out.status === 404 || (out.status === 400 && type === 'application/json'), `${id} → ${out.status}`).toBe(true);
          }),
          { numRuns: RUNS, endOnFailure: true },
        );
        r.held(`no 5xx; unknown or malformed ids always 404; every 4xx wrote nothing; statuses ${JSON.stringify(Object.fromEntries(seen))}`);
        r.measure('requests', RUNS);
      },
    );
  }, 240_000);

  it('POST /v1/books (JSON and multipart): never 5xx, nothing written on 4xx', async () => {
    await log.scenario(
      `POST /v1/books × ${RUNS} JSON bodies and × ${RUNS} multipart uploads from fast-check`,
      'random JSON books (pages of any type, nasty titles), random uploads (any bytes, names, types, fields, extra files, fake PDFs)',
      async (r) => {
        const seen = new Map<number, number>();
        const bookArb = fc.oneof(
          mutated(validBook, [['title'], ['author'], ['pages'], ['pages', '0']], fc.oneof(badValue, fc.constant('   '), fc.constant(Array(41).fill('page')), fc.constant('x'.repeat(50_001)))),
          anyJson.map((body) => ({ body, mutation: { kind: 'extra' as const, value: null } as Mutation })),
        );
        await fc.assert(
          fc.asyncProperty(bookArb, async ({ body, mutation }) => {
            const out = await postJson('/v1/books', body);
            seen.set(out.status, (seen.get(out.status) ?? 0) + 1);
            if (mutation.kind === 'none') expect(out.status, JSON.stringify(body).slice(0, 300)).toBe(202);
          }),
          { numRuns: RUNS, endOnFailure: true },
        );
        const fileArb = fc.record({
          field: fc.constantFrom('file', 'file', 'file', 'upload', 'files[]'),
          name: fc.oneof(fc.constantFrom('book.txt', 'book.pdf', 'book.PDF', 'a.bin', '', '../../etc/passwd.txt', 'x.txt.exe', '😀.txt', 'nul\u0000.txt', '\ud800.txt'), fc.string({ maxLength: 30 })),
          type: fc.constantFrom('text/plain', 'application/pdf', 'application/octet-stream', 'image/png', 'text/plain; charset=utf-16', ''),
          data: fc.oneof(
            fc.uint8Array({ maxLength: 3_000 }),
            fc.string({ unit: 'binary', maxLength: 500 }).map((s) => new TextEncoder().encode(s)),
            fc.uint8Array({ maxLength: 2_000 }).map((b) => new Uint8Array([...new TextEncoder().encode('%PDF-1.7\n'), ...b])),
            fc.constant(new TextEncoder().encode('The sea was loud.\fThe city was quiet.')),
          ),
        });
        const formArb = fc.record({
          files: fc.array(fileArb, { maxLength: 2 }),
          title: fc.option(anyText, { nil: undefined }),
          author: fc.option(anyText, { nil: undefined }),
          junk: fc.option(fc.string({ maxLength: 20 }), { nil: undefined }),
        });
        await fc.assert(
          fc.asyncProperty(formArb, async ({ files, title, author, junk }) => {
            const form = new FormData();
            if (title !== undefined) form.set('title', title);
            if (author !== undefined) form.set('author', author);
            if (junk !== undefined) form.set(junk || 'junk', 'x');
            for (const f of files) form.append(f.field, new Blob([Buffer.from(f.data)], { type: f.type }), f.name);
            const out = await send('POST', '/v1/books', { body: form });
            seen.set(out.status, (seen.get(out.status) ?? 0) + 1);
          }),
          { numRuns: RUNS, endOnFailure: true },
        );
        r.held(`no 5xx; every 4xx wrote nothing; statuses ${JSON.stringify(Object.fromEntries(seen))}`);
        r.measure('requests', RUNS * 2);
      },
    );
  }, 240_000);

  it('POST /v1/webhooks and /v1/stream-tokens: never 5xx, nothing written on 4xx', async () => {
    await log.scenario(
      `POST /v1/webhooks × ${RUNS} and /v1/stream-tokens × ${Math.ceil(RUNS / 2)} fast-check bodies`,
      'random endpoint registrations (private, loopback, credentialed, non-http and random URLs; unknown events) and random token requests',
      async (r) => {
        const seen = new Map<number, number>();
        const urlArb = fc.oneof(
          fc.constantFrom('http://127.0.0.1/x', 'http://10.1.2.3/', 'http://[::1]/', 'http://169.254.169.254/latest', 'ftp://93.184.216.34/',
            'http://user:pw@93.184.216.34/', 'javascript:alert(1)', 'http://localhost:9/', 'https://93.184.216.34/hook', 'http://[fe80::1]/', 'http://0x7f000001/',
            'http://[::ffff:127.0.0.1]:6379/', 'http://[::ffff:169.254.169.254]/', 'http://[64:ff9b::7f00:1]/', 'http://[fec0::1]/'),
          fc.ipV4().map((ip) => `https://${ip}/hooks/${ip}`),
          anyText,
        );
        const hookArb = fc.oneof(
          mutated(validHook, [['url'], ['events'], ['events', '0']], fc.oneof(badValue, urlArb, fc.constant('batch.exploded'))),
          anyJson.map((body) => ({ body, mutation: { kind: 'extra' as const, value: null } as Mutation })),
        );
        await fc.assert(
          fc.asyncProperty(hookArb, async ({ body, mutation }) => {
            const out = await postJson('/v1/webhooks', body);
            seen.set(out.status, (seen.get(out.status) ?? 0) + 1);
            if (mutation.kind === 'none') expect(out.status, JSON.stringify(body).slice(0, 300)).toBe(201);
          }),
          { numRuns: RUNS, endOnFailure: true },
        );
        const tokenSeen = new Map<number, number>();
        await fc.assert(
          fc.asyncProperty(anyJson, fc.constantFrom('application/json', 'text/plain', ''), async (body, type) => {
            const out = await send('POST', '/v1/stream-tokens', { body: JSON.stringify(body), headers: type ? { 'Content-Type': type } : {} });
            tokenSeen.set(out.status, (tokenSeen.get(out.status) ?? 0) + 1);
          }),
          { numRuns: Math.ceil(RUNS / 2), endOnFailure: true },
        );
        r.held(`webhooks: no 5xx, every 4xx wrote nothing; statuses ${JSON.stringify(Object.fromEntries(seen))}`);
        r.held(`stream tokens: no 5xx; statuses ${JSON.stringify(Object.fromEntries(tokenSeen))}`);
        r.measure('requests', RUNS + Math.ceil(RUNS / 2));
      },
    );
  }, 240_000);
});

describe('edges by hand', () => {
  it('oversize bodies answer 413 and wrong content types 415, writing nothing', async () => {
    await log.scenario(
      'Oversize bodies and wrong content types at every POST route',
      'bodies past the JSON limits (1 MiB, a new batch\'s MAX_BATCH_BODY_BYTES) and the book upload limit; text/plain, XML, form-encoded, no type, unknown charset and encoding',
      async (r) => {
        const big = JSON.stringify({ visionId: 'big', sections: [{ key: 'a', text: 'x'.repeat(1_100_000) }], variants: ['voice_only'], voice: 'alloy' });
        // A new batch's limit is the largest valid batch's (MAX_BATCH_BODY_BYTES, 1.7 MB).
        const bigger = JSON.stringify({ visionId: 'big', sections: [{ key: 'a', text: 'x'.repeat(MAX_BATCH_BODY_BYTES) }], variants: ['voice_only'], voice: 'alloy' });
        expect((await postJson('/v1/audio/batches', bigger)).status).toBe(413);
        expect((await postJson('/v1/webhooks', JSON.stringify({ url: 'https://93.184.216.34/', events: ['batch.completed'], pad: 'x'.repeat(1_100_000) }))).status).toBe(413);
        expect((await postJson('/v1/books', JSON.stringify({ title: 'Big', pages: ['x'.repeat(MAX_UPLOAD)] }))).status).toBe(413);
        const form = new FormData();
        form.set('file', new Blob([Buffer.alloc(MAX_UPLOAD + 1, 'a')], { type: 'text/plain' }), 'big.txt');
        expect((await send('POST', '/v1/books', { body: form })).status).toBe(413);
        expect((await send('POST', `/v1/audio/batches/${crypto.randomUUID()}/retry`, { body: big, headers: { 'Content-Type': 'application/json' } })).status).toBe(413);
        r.held('413 for a batch past MAX_BATCH_BODY_BYTES, a 1.1 MB webhook, a JSON book and an upload one byte over BOOK_MAX_UPLOAD_BYTES, and a 1.1 MB retry body');

        const valid = JSON.stringify({ visionId: 'v', sections: [{ key: 'a', text: 'Hi.' }], variants: ['voice_only'], voice: 'alloy' });
        const types = ['text/plain', 'application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=latin1'];
        for (const path of ['/v1/audio/batches', '/v1/webhooks']) {
          for (const type of types) expect((await send('POST', path, { body: valid, headers: { 'Content-Type': type } })).status, `${path} ${type}`).toBe(415);
          expect((await send('POST', path, { body: valid })).status, `${path} without a type`).toBe(415);
          expect((await send('POST', path, { body: valid, headers: { 'Content-Type': 'application/json', 'Content-Encoding': 'x-unknown' } })).status, `${path} unknown encoding`).toBe(415);
          expect((await send('POST', path, { body: 'not gzip', headers: { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' } })).status, `${path} broken gzip`).toBeLessThan(500);
        }
        for (const type of ['text/plain', 'application/xml', 'application/x-www-form-urlencoded']) {
          expect((await send('POST', '/v1/books', { body: 'title=x', headers: { 'Content-Type': type } })).status, type).toBe(415);
        }
        expect((await send('POST', '/v1/books', { body: 'x' })).status).toBe(415);
        r.held(`415 for ${types.length} wrong types, no type, and an unknown Content-Encoding at /v1/audio/batches and /v1/webhooks; 415 for non-JSON, non-multipart books`);
      },
    );
  }, 120_000);

  it('malformed ids answer 404 on every route that takes one, never 500', async () => {
    await log.scenario(
      'Malformed ids on every :id route (GET and POST)',
      'ids: not-uuids, nil uuid, traversal, SQL, NUL, 5,000 characters, emoji, bad percent-encoding',
      async (r) => {
        const routes = [
          ['GET', '/v1/audio/batches/:id'], ['GET', '/v1/audio/batches/:id/events'], ['POST', '/v1/audio/batches/:id/retry'], ['POST', '/v1/audio/batches/:id/cancel'],
          ['GET', '/v1/audio/sets/:id'], ['GET', '/v1/audio/tracks/:id/audio'], ['GET', '/v1/books/:id'], ['GET', '/v1/books/:id/scenes'],
          ['GET', '/v1/books/:id/events'], ['POST', '/v1/books/:id/soundscapes'], ['GET', '/v1/soundscapes/:id/audio'], ['GET', '/v1/webhooks/:id'],
          ['GET', '/v1/webhooks/:id/deliveries'], ['DELETE', '/v1/webhooks/:id'],
        ] as const;
        const ids = ['not-a-uuid', '123', '00000000-0000-0000-0000-000000000000', crypto.randomUUID(), crypto.randomUUID().toUpperCase(), '%00', '..%2F..%2Fetc%2Fpasswd',
          encodeURIComponent("'; drop table books; --"), encodeURIComponent('😀'), 'x'.repeat(5_000), '%20', encodeURIComponent('\ud800'.replace(/\ud800/, '\ufffd'))];
        let checked = 0;
        for (const [method, route] of routes) {
          for (const id of ids) {
            const out = await send(method, route.replace(':id', id), method === 'POST' ? { body: '{}', headers: { 'Content-Type': 'application/json' } } : {});
            expect(out.status, `${method} ${route} ${id.slice(0, 40)}`).toBe(404);
            checked++;
          }
          // A path that is not valid percent-encoding names no id at all: 400, as the README says.
          const broken = await send(method, route.replace(':id', '%E0%A4%A'), method === 'POST' ? { body: '{}', headers: { 'Content-Type': 'application/json' } } : {});
          expect(broken.status, `${method} ${route} bad encoding`).toBe(400);
          expect(broken.body.error.code, `${method} ${route} bad encoding`).toBe('bad_request');
          checked++;
        }
        // Query strings reach the database too: NUL and unpaired surrogates are 400, not 500.
        for (const query of ['visionId=%00', 'status=%00', 'cursor=%00', `cursor=${Buffer.from('2026-01-01T00:00:00Z|x').toString('base64url')}`, 'limit=1e999', 'limit=-1']) {
          expect((await send('GET', `/v1/audio/batches?${query}`)).status, query).toBe(400);
          checked++;
        }
        // Bytes that are not UTF-8 decode to U+FFFD: a harmless search, not an error.
        expect((await send('GET', '/v1/audio/batches?visionId=%ED%A0%80')).status).toBe(200);
        checked++;
        expect((await send('GET', '/v1/books?status=%00')).status).toBe(400);
        checked++;
        // Cursors that decode to a date JavaScript parses but PostgreSQL refuses (or that no
        // page of ours could end at) are 400 on both lists, never 500.
        const uuid = '00000000-0000-4000-8000-000000000000';
        for (const at of ['+275760-09-13T00:00:00.000Z', '-000001-01-01T00:00:00.000Z', '0000-01-01T00:00:00.000Z', '+010000-01-01T00:00:00.000Z', '1', '2026-01-01T00:00:00Z', '2026-02-30T00:00:00.000000Z', '2026-01-01T00:00:00.0000Z', '2026-01-01T24:00:00.000001Z']) {
          const cursor = Buffer.from(`${at}|${uuid}`).toString('base64url');
          for (const list of ['/v1/audio/batches', '/v1/books']) {
            expect((await send('GET', `${list}?cursor=${cursor}`)).status, `${list} cursor ${at}`).toBe(400);
            checked++;
          }
        }
        // Cursors we could have made page on: to the microsecond, and to the millisecond (an
        // earlier version's).
        for (const at of ['2026-01-01T00:00:00.000001Z', '2026-01-01T00:00:00.000Z']) {
          for (const list of ['/v1/audio/batches', '/v1/books']) {
            expect((await send('GET', `${list}?cursor=${Buffer.from(`${at}|${uuid}`).toString('base64url')}`)).status, `${list} cursor ${at}`).toBe(200);
            checked++;
          }
        }
        r.held(`${checked} requests over ${routes.length} routes: every malformed or unknown id 404 (a broken percent-encoding 400), never 500; NUL or bad cursors in list queries 400`);
        r.measure('requests', checked);
      },
    );
  }, 120_000);

  it('unicode, very long texts, NUL, lone surrogates and duplicate section keys', async () => {
    await log.scenario(
      'Unicode and very long texts, NUL and lone surrogates, duplicate section keys',
      'sections of 20,000 multi-byte characters (14 of them), 20,001 characters, emoji/RTL/combining text, \\u0000 and unpaired surrogates in every string field, duplicate keys',
      async (r) => {
        const text = (n: number, ch: string) => ch.repeat(n);
        // The documented maximum: 14 sections of 20,000 characters of 3-byte text fits the limit.
        const longest = { visionId: 'longest', sections: Array.from({ length: 14 }, (_, i) => ({ key: `s${i}`, title: 'Ünïcödé ✓', text: text(20_000, '語') })), variants: ['voice_only'], voice: 'alloy' };
        const accepted = await postJson('/v1/audio/batches', longest);
        expect(accepted.status).toBe(201);
        const stored = await db.one(`select sections_requested from audio_generation_batches where id = $1`, [accepted.body.id]);
        expect(stored.sections_requested[13].text).toBe(longest.sections[13]!.text);
        r.held(`14 sections × 20,000 three-byte characters (${Math.round(JSON.stringify(longest).length / 1024)} k characters of JSON) accepted, 201, stored exactly`);

        const mixed = '😀 مرحبا 🇫🇷 e\u0301 𝕳 \u202e ok 語 ';
        const unicode = await postJson('/v1/audio/batches', { visionId: 'ユニコード 😀', sections: [{ key: 'uni', title: mixed, text: mixed.repeat(100) }], variants: ['voice_only'], voice: 'alloy' });
        expect(unicode.status).toBe(201);
        const round = await db.one(`select vision_id, sections_requested from audio_generation_batches where id = $1`, [unicode.body.id]);
        expect(round.vision_id).toBe('ユニコード 😀');
        expect(round.sections_requested[0].title).toBe(mixed);
        r.held('emoji, RTL, combining marks and astral characters round-trip exactly');

        const tooLong = await postJson('/v1/audio/batches', { visionId: 'long', sections: [{ key: 'a', text: text(20_001, 'a') }], variants: ['voice_only'], voice: 'alloy' });
        expect(tooLong.status).toBe(400);
        expect(tooLong.body.error.message).toMatch(/at most 20000 characters/);
        const duplicate = await postJson('/v1/audio/batches', { visionId: 'dup', sections: [{ key: 'a', text: 'One.' }, { key: 'a', text: 'Two.' }], variants: ['voice_only'], voice: 'alloy' });
        expect(duplicate.status).toBe(400);
        expect(duplicate.body.error.message).toBe('body.sections.1.key: duplicate section key "a"');
        r.held(`20,001 characters → 400 "${tooLong.body.error.message}"; duplicate keys → 400 "${duplicate.body.error.message}"`);

        const base = { visionId: 'v', sections: [{ key: 'a', title: 't', text: 'Fine text.' }], variants: ['voice_only'], voice: 'alloy' };
        const poisons = { nul: 'a\u0000b', loneHigh: 'a\ud800b', loneLow: '\udc00' };
        const results: string[] = [];
        for (const [name, poison] of Object.entries(poisons)) {
          for (const field of ['visionId', 'title', 'text'] as const) {
            const body = structuredClone(base) as any;
            if (field === 'visionId') body.visionId = poison;
            else body.sections[0][field] = poison;
            const out = await postJson('/v1/audio/batches', body);
            expect(out.status, `${name} in ${field}`).toBe(400);
            results.push(`${name}/${field}`);
          }
          const book = await postJson('/v1/books', { title: `T${poison}`, pages: [`page ${poison}`] });
          expect(book.status, `${name} in a book`).toBe(400);
          const hook = await postJson('/v1/webhooks', { url: `https://93.184.216.34/${poison}`, events: ['batch.completed'] });
          expect(hook.status, `${name} in a webhook url`).toBeLessThan(500);
        }
        r.held(`NUL and unpaired surrogates in ${results.length} batch fields and in book titles and pages → 400, nothing written`);
      },
    );
  }, 120_000);
});

afterAll(() => {
  // eslint-disable-next-line no-console
  console.log(`bad-input: ${stats.requests} requests, statuses ${JSON.stringify(Object.fromEntries([...stats.byStatus].sort((a, b) => a[0] - b[0])))}`);
});
