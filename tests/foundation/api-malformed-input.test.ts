import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { postBook } from '../helpers/books';
import { createTestEnv, type TestEnv } from '../helpers/services';

// The promise README's HTTP API section makes: bad input answers 4xx in the one error shape
// and writes nothing; no input answers 5xx. Every route gets a broad, deterministic set of
// malformed inputs (FUZZ_SEED picks another draw of the random part; a failure names its case
// and the seed, so it reproduces).
const SEED = Number(process.env.FUZZ_SEED ?? 20260301);

/** mulberry32: small, seeded, the same sequence on every machine. */
function generator(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  return { next, pick };
}

let env: TestEnv;
let api: TestApi;
let db: pg.Client;
const agent = new Agent({ keepAlive: true, maxSockets: 1 });
let tokenA = '';
let tokenB = '';
let adminToken = '';
let streamTokenA = '';

/** Ids user-a owns, and ids of user-b's rows (which user-a must see as 404). */
const own = { batch: '', set: '', track: '', book: '', webhook: '', soundscape: '00000000-0000-4000-8000-000000000000' };
const others = { batch: '', set: '', track: '', book: '' };

interface Case {
  name: string;
  method: string;
  path: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
  /** A write: the answer must be 4xx and no table may change. */
  write?: boolean;
}

interface Answer {
  status: number;
  contentType: string;
  body: string;
}

/** A raw request: GET with a body, latin-1 header bytes and any Content-Type, which fetch refuses to send. */
function send(c: Case): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const url = new URL(api.url);
    const body = c.body === undefined ? undefined : Buffer.isBuffer(c.body) ? c.body : Buffer.from(c.body);
    const headers: Record<string, string | string[]> = { ...(c.headers ?? {}) };
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'authorization')) headers.Authorization = `Bearer ${tokenA}`;
    if (body) headers['Content-Length'] = String(body.length);
    const req = httpRequest({ host: url.hostname, port: url.port, method: c.method, path: c.path, headers, agent }, (res) => {
      const contentType = String(res.headers['content-type'] ?? '');
      // An event stream stays open: its first answer is all this test needs.
      if (contentType.startsWith('text/event-stream')) {
        res.destroy();
        resolve({ status: res.statusCode!, contentType, body: '' });
        return;
      }
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, contentType, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer within 10 s to ${c.name}`)));
    req.end(body);
  });
}

/** Every table's content in one digest: a write anywhere changes it. */
async function digest(): Promise<string> {
  const tables = ['audio_generation_batches', 'audio_sets', 'audio_tracks', 'books', 'book_spreads', 'scenes', 'soundscapes', 'webhook_endpoints', 'webhook_deliveries', 'provider_calls'];
  const parts = tables.map((t) => `(select coalesce(md5(string_agg(x::text, '|' order by x::text)), '') from ${t} x)`);
  const { rows } = await db.query<{ d: string }>(`select ${parts.join(" || ':' || ")} as d`);
  return rows[0]!.d;
}

/** The failures of one case, or [] when it kept the promise. */
function problems(c: Case, answer: Answer): string[] {
  const found: string[] = [];
  if (answer.status >= 500) found.push(`answered ${answer.status}`);
  if (c.write && answer.status < 400) found.push(`a bad write answered ${answer.status}`);
  if (answer.status >= 400 && c.method !== 'HEAD') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(answer.body);
    } catch {
      found.push(`${answer.status} with a body that is not JSON: ${JSON.stringify(answer.body.slice(0, 200))}`);
    }
    const error = (parsed as { error?: Record<string, unknown> } | undefined)?.error;
    if (parsed !== undefined) {
      const shaped =
        !!error &&
        Object.keys(parsed as object).length === 1 &&
        typeof error.code === 'string' &&
        typeof error.message === 'string' &&
        error.message.length > 0 &&
        'details' in error;
      if (!shaped) found.push(`${answer.status} not in the error shape: ${answer.body.slice(0, 200)}`);
    }
    if (!answer.contentType.startsWith('application/json')) found.push(`${answer.status} as ${answer.contentType || 'no content type'}`);
  }
  return found;
}

async function check(cases: Case[]): Promise<void> {
  const failures: string[] = [];
  for (const c of cases) {
    const before = c.write ? await digest() : '';
    const answer = await send(c);
    const found = problems(c, answer);
    if (c.write && (await digest()) !== before) found.push('wrote to the database');
    if (found.length > 0) failures.push(`${c.name} (${c.method} ${c.path.slice(0, 120)}): ${found.join('; ')}`);
  }
  expect(failures, `seed ${SEED}`).toEqual([]);
}

// ---------------------------------------------------------------------------------------------
// Values

const LONE_HIGH = '\ud800';
const STRINGS_NEVER_VALID = [`a\u0000b`, `x${LONE_HIGH}`, '\udc00y', `\u0000`];
const WRONG_TYPES: unknown[] = [null, true, false, 0, -0, -1, 1.5, 1e308, Number.MAX_SAFE_INTEGER + 2, {}, [], [[]], { a: 1 }, [null], ['a', 1]];
const ODD_STRINGS = ['', ' ', '\t\n', 'NaN', 'Infinity', '-0', '1e309', 'null', 'true', '[]', '{}', '😀'.repeat(50), '\u202eevil', 'e\u0301', 'x'.repeat(70_000), '%00', '../../etc/passwd'];

const BAD_IDS = [
  'x',
  '0',
  '-1',
  '1e309',
  'NaN',
  'null',
  '00000000-0000-0000-0000-000000000000',
  '00000000000000000000000000000000',
  '{00000000-0000-4000-8000-000000000000}',
  '00000000-0000-4000-8000-00000000000g',
  '%00',
  '%ZZ',
  '%E0%A4%A',
  '%ED%A0%80',
  '%C3%A9',
  'a'.repeat(4_000),
  '..%2F..%2Fetc%2Fpasswd',
  '__proto__',
  'constructor',
  "'%20or%201=1--",
];

const b64 = (s: string) => Buffer.from(s).toString('base64url');
const BAD_CURSORS = () => [
  '',
  '!!!!',
  '%00',
  b64('garbage'),
  b64('{"at":"2026-01-01","id":1}'),
  b64('|'),
  b64(`9999-12-31T23:59:59.999999Z|${own.batch}`),
  b64(`0001-01-01T00:00:00.000000Z|${own.batch}`),
  b64(`0000-01-01T00:00:00.000000Z|${own.batch}`),
  b64(`2026-02-30T00:00:00.000000Z|${own.batch}`),
  b64(`+275760-09-13T00:00:00.000Z|${own.batch}`),
  b64(`2026-01-01T24:00:00.000000Z|${own.batch}`),
  b64(`2026-01-01T00:00:00.000000Z|not-a-uuid`),
  b64(`2026-01-01T00:00:00.000000Z|${own.batch}|x`),
  b64(`2026-01-01T00:00:00.000000Z\u0000|${own.batch}`),
  Buffer.from([0xff, 0xfe, 0x00, 0x7c]).toString('base64url'),
  'A'.repeat(200),
  'A'.repeat(201),
];
const BAD_LIMITS = ['0', '-1', '1e9', 'abc', '1.5', '', '-0', 'NaN', 'Infinity', '1e309', '99999999999999999999', ' ', '%00', '0x10', '1,2'];

const q = (params: Record<string, string | string[]>) =>
  `?${Object.entries(params)
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${encodeURIComponent(k)}=${x.startsWith('%') ? x : encodeURIComponent(x)}`))
    .join('&')}`;

// ---------------------------------------------------------------------------------------------
// Bodies: each write route's valid body, and every way this test breaks it.

const validBatch = () => ({ visionId: 'vision-fuzz', sections: sampleSections(2), variants: ['voice_only'], voice: 'alloy' });
const validBook = () => ({ title: 'A title', author: 'Someone', pages: ['One page of text.', 'Another page.'] });
const validWebhook = () => ({ url: 'https://93.184.215.14/hook', events: ['batch.completed'] });
const validPlayback = () => ({ audio_url: `/v1/audio/tracks/${others.track}/audio` });

type Json = unknown;

/** Every path to a value in `body` (objects and arrays), so each field gets its turn. */
function pathsOf(value: Json, prefix: (string | number)[] = []): (string | number)[][] {
  if (value === null || typeof value !== 'object') return [prefix];
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v] as const) : Object.entries(value);
  return [prefix, ...entries.flatMap(([k, v]) => pathsOf(v, [...prefix, k]))];
}

function setAt(body: Json, path: (string | number)[], replacement: Json): Json {
  if (path.length === 0) return replacement;
  const copy = structuredClone(body) as Record<string | number, Json>;
  let node = copy;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, Json>;
  node[path.at(-1)!] = replacement;
  return copy;
}

/** A value at `path` no valid body has: a wrong type, or a string no route accepts. */
function wrongValueFor(current: Json, rand: ReturnType<typeof generator>): Json {
  if (typeof current === 'string') return rand.next() < 0.5 ? rand.pick(WRONG_TYPES.filter((v) => typeof v !== 'string')) : `${current}${rand.pick(STRINGS_NEVER_VALID)}`;
  if (Array.isArray(current)) return rand.pick([null, 'a', 1, {}, { 0: 'a' }, true]);
  return rand.pick(['a', 1, [], null, true, LONE_HIGH]);
}

function mutatedBodies(name: string, valid: Json, rand: ReturnType<typeof generator>, fieldsThatMayGo: string[]): { name: string; text: string }[] {
  const out: { name: string; text: string }[] = [];
  for (const path of pathsOf(valid)) {
    const current = path.reduce<Json>((node, key) => (node as Record<string | number, Json>)[key], valid);
    for (let i = 0; i < 3; i++) {
      const wrong = wrongValueFor(current, rand);
      out.push({ name: `${name} ${path.join('.') || '(root)'} = ${JSON.stringify(wrong)?.slice(0, 40)}`, text: JSON.stringify(setAt(valid, path, wrong)) });
    }
  }
  for (const key of Object.keys(valid as object)) {
    if (fieldsThatMayGo.includes(key)) continue;
    const { [key]: _gone, ...rest } = valid as Record<string, Json>;
    out.push({ name: `${name} without ${key}`, text: JSON.stringify(rest) });
  }
  out.push({ name: `${name} with an unknown field`, text: JSON.stringify({ ...(valid as object), extra: 1 }) });
  out.push({ name: `${name} with __proto__`, text: JSON.stringify(valid).replace(/^\{/, '{"__proto__":{"admin":true},') });
  const text = JSON.stringify(valid);
  out.push(
    ...[
      ['truncated', text.slice(0, Math.floor(text.length / 2))],
      ['truncated at the end', text.slice(0, -1)],
      ['trailing garbage', `${text}x`],
      ['two documents', `${text}${text}`],
      ['null', 'null'],
      ['a string', '"hello"'],
      ['a number', '1'],
      ['1e309', '1e309'],
      ['an array', `[${text}]`],
      ['an empty array', '[]'],
      ['empty', ''],
      ['whitespace', '  \n'],
      ['NaN literal', text.replace(/^\{/, '{"n":NaN,')],
      ['Infinity literal', text.replace(/^\{/, '{"n":Infinity,')],
      ['single quotes', text.replace(/"/g, "'")],
      ['comments', `/* c */${text}`],
      ['a raw lone surrogate escape in a key', text.replace(/^\{/, '{"\\ud800":1,')],
      ['a NUL escape in a key', text.replace(/^\{/, '{"a\\u0000":1,')],
      ['deep arrays', `{"x":${'['.repeat(5_000)}${']'.repeat(5_000)}}`],
      ['deep objects', `${'{"a":'.repeat(2_000)}1${'}'.repeat(2_000)}`],
      ['a huge number', text.replace(/^\{/, `{"n":1${'0'.repeat(400)},`)],
      ['-0 everywhere', text.replace(/^\{/, '{"n":-0,')],
      ['duplicate keys, the last one bad', text.replace(/\}$/, `,${JSON.stringify(Object.keys(valid as object)[0])}:[]}`)],
    ].map(([what, t]) => ({ name: `${name} ${what}`, text: t! })),
  );
  return out;
}

const jsonHeaders = { 'Content-Type': 'application/json' };

// ---------------------------------------------------------------------------------------------

beforeAll(async () => {
  env = await createTestEnv({ BOOK_MAX_UPLOAD_BYTES: String(256 * 1024), AUTH_SERVICE_TOKEN: 'service-token-that-is-long-enough' });
  api = await startTestApi(env.config);
  db = new pg.Client({ connectionString: env.databaseUrl });
  await db.connect();
  tokenA = await tokenFor('user-a');
  tokenB = await tokenFor('user-b');
  adminToken = await tokenFor('admin-a', { role: 'admin' });
  streamTokenA = (await readJson(await api.request('/v1/stream-tokens', { method: 'POST' }))).token;

  const a = await createBatch(api, validBatch());
  const b = await createBatch(api, { ...validBatch(), visionId: 'other' }, { user: 'user-b' });
  expect([a.status, b.status]).toEqual([201, 201]);
  own.batch = a.body.id;
  others.batch = b.body.id;
  own.set = a.body.audio_set_ids[0];
  others.set = b.body.audio_set_ids[0];
  const { rows: tracks } = await db.query<{ id: string; user_id: string; batch_id: string }>('select id, user_id, batch_id from audio_tracks order by id');
  const mine = tracks.find((t) => t.user_id === 'user-a')!;
  own.track = mine.id;
  others.track = tracks.find((t) => t.user_id === 'user-b')!.id;
  // One finished track with a file, so the audio route reaches its Range and ETag handling.
  await api.ctx.storage.put(`tracks/${mine.batch_id}/${mine.id}.mp3`, Buffer.alloc(1000, 7), 'audio/mpeg');
  await db.query(`update audio_tracks set status = 'completed', mixed_file_key = $2 where id = $1`, [mine.id, `tracks/${mine.batch_id}/${mine.id}.mp3`]);
  const bookA = await postBook(api, validBook(), 'user-a');
  const bookB = await postBook(api, validBook(), 'user-b');
  own.book = bookA.body.bookId ?? bookA.body.id;
  others.book = bookB.body.bookId ?? bookB.body.id;
  const hook = await api.request('/v1/webhooks', { method: 'POST', json: validWebhook() });
  expect(hook.status).toBe(201);
  own.webhook = (await readJson(hook)).id;
}, 60_000);

afterAll(async () => {
  agent.destroy();
  await db?.end();
  await api?.close();
  await env?.cleanup();
});

/** Every route (README's table), with its path built from an id. */
const ROUTES: { method: string; path: (id: string) => string; kind: keyof typeof own | null; write?: boolean }[] = [
  { method: 'GET', path: (id) => `/v1/audio/batches/${id}`, kind: 'batch' },
  { method: 'GET', path: (id) => `/v1/audio/batches/${id}/events`, kind: 'batch' },
  { method: 'HEAD', path: (id) => `/v1/audio/batches/${id}/events`, kind: 'batch' },
  { method: 'POST', path: (id) => `/v1/audio/batches/${id}/retry`, kind: 'batch', write: true },
  { method: 'POST', path: (id) => `/v1/audio/batches/${id}/cancel`, kind: 'batch', write: true },
  { method: 'GET', path: (id) => `/v1/audio/sets/${id}`, kind: 'set' },
  { method: 'GET', path: (id) => `/v1/audio/tracks/${id}/audio`, kind: 'track' },
  { method: 'HEAD', path: (id) => `/v1/audio/tracks/${id}/audio`, kind: 'track' },
  { method: 'GET', path: (id) => `/v1/books/${id}`, kind: 'book' },
  { method: 'GET', path: (id) => `/v1/books/${id}/scenes`, kind: 'book' },
  { method: 'GET', path: (id) => `/v1/books/${id}/events`, kind: 'book' },
  { method: 'POST', path: (id) => `/v1/books/${id}/soundscapes`, kind: 'book', write: true },
  { method: 'GET', path: (id) => `/v1/soundscapes/${id}/audio`, kind: 'soundscape' },
  { method: 'GET', path: (id) => `/v1/webhooks/${id}`, kind: 'webhook' },
  { method: 'GET', path: (id) => `/v1/webhooks/${id}/deliveries`, kind: 'webhook' },
  { method: 'DELETE', path: (id) => `/v1/webhooks/${id}`, kind: 'webhook', write: true },
];
const FIXED_ROUTES = [
  ['POST', '/v1/audio/batches'],
  ['GET', '/v1/audio/batches'],
  ['GET', '/v1/audio/variants'],
  ['GET', '/v1/audio/voices'],
  ['POST', '/v1/books'],
  ['GET', '/v1/books'],
  ['POST', '/v1/stream-tokens'],
  ['POST', '/v1/playback-urls'],
  ['POST', '/v1/webhooks'],
  ['GET', '/v1/webhooks'],
  ['GET', '/v1/admin/analytics'],
  ['GET', '/v1/admin/batches'],
] as const;

describe('malformed input never answers 5xx, always the error shape, and writes nothing', () => {
  it('ids: malformed, and other users’ rows', async () => {
    const cases: Case[] = [];
    for (const route of ROUTES) {
      const ids = [...BAD_IDS, ...(route.kind && route.kind in others ? [others[route.kind as keyof typeof others]] : [])];
      for (const id of ids) cases.push({ name: `id ${id.slice(0, 40)}`, method: route.method, path: route.path(id), write: route.write });
    }
    await check(cases);
  });

  it('request bodies: every field of every write given a wrong value, and broken JSON', async () => {
    const rand = generator(SEED);
    const cases: Case[] = [];
    const routes: [string, Json, string[]][] = [
      ['/v1/audio/batches', validBatch(), ['model']],
      ['/v1/books', validBook(), ['author']],
      ['/v1/webhooks', validWebhook(), []],
      ['/v1/playback-urls', validPlayback(), []],
    ];
    for (const [path, valid, optional] of routes) {
      for (const body of mutatedBodies(path, valid, rand, optional)) {
        // A wrong playback body may still name someone else's track: 400 or 404, never a URL.
        cases.push({ name: body.name, method: 'POST', path, headers: jsonHeaders, body: body.text, write: true });
      }
    }
    // Strings of every odd kind, in each string field.
    for (const s of [...ODD_STRINGS, ...STRINGS_NEVER_VALID]) {
      cases.push({ name: `visionId ${JSON.stringify(s.slice(0, 20))}`, method: 'POST', path: '/v1/audio/batches', headers: jsonHeaders, body: JSON.stringify({ ...validBatch(), visionId: s, voice: 'nobody' }), write: true });
      cases.push({ name: `webhook url ${JSON.stringify(s.slice(0, 20))}`, method: 'POST', path: '/v1/webhooks', headers: jsonHeaders, body: JSON.stringify({ url: s, events: ['batch.completed'] }), write: true });
      cases.push({ name: `audio_url ${JSON.stringify(s.slice(0, 20))}`, method: 'POST', path: '/v1/playback-urls', headers: jsonHeaders, body: JSON.stringify({ audio_url: s }), write: true });
      cases.push({ name: `book page ${JSON.stringify(s.slice(0, 20))}`, method: 'POST', path: '/v1/books', headers: jsonHeaders, body: JSON.stringify({ title: ' ', pages: [s] }), write: true });
    }
    for (const url of ['http://127.0.0.1/', 'http://[::1]/', 'http://[::ffff:127.0.0.1]/', 'http://0/', 'http://2130706433/', 'ftp://93.184.215.14/', 'http://[fe80::1%25eth0]/', 'http://93.184.215.14:99999/', 'javascript:alert(1)', 'http://a b/', 'http://[/', 'https://user:pass@169.254.169.254/']) {
      cases.push({ name: `webhook url ${url}`, method: 'POST', path: '/v1/webhooks', headers: jsonHeaders, body: JSON.stringify({ url, events: ['batch.completed'] }), write: true });
    }
    for (const audio of [`/v1/audio/tracks/${own.track}/audio/../../x`, `/v1/audio/tracks/%ZZ/audio`, `/v1/soundscapes/${'a'.repeat(150)}/audio`, `/v1/audio/tracks/${own.track.toUpperCase()}/audio?x=1`, `/V1/audio/tracks/${own.track}/audio`]) {
      cases.push({ name: `audio_url ${audio}`, method: 'POST', path: '/v1/playback-urls', headers: jsonHeaders, body: JSON.stringify({ audio_url: audio }), write: true });
    }
    // Bodies over each limit.
    cases.push({ name: 'batch body over its limit', method: 'POST', path: '/v1/audio/batches', headers: jsonHeaders, body: JSON.stringify({ visionId: 'x'.repeat(1_800_000) }), write: true });
    cases.push({ name: 'book body over its limit', method: 'POST', path: '/v1/books', headers: jsonHeaders, body: JSON.stringify({ title: 't', pages: ['x'.repeat(300 * 1024)] }), write: true });
    cases.push({ name: 'webhook body over 1 MiB', method: 'POST', path: '/v1/webhooks', headers: jsonHeaders, body: JSON.stringify({ url: 'x'.repeat(1_100_000) }), write: true });
    cases.push({ name: 'retry with a body over 1 MiB', method: 'POST', path: `/v1/audio/batches/${own.batch}/retry`, headers: jsonHeaders, body: JSON.stringify({ x: 'x'.repeat(1_100_000) }), write: true });
    cases.push({ name: 'cancel with broken JSON', method: 'POST', path: `/v1/audio/batches/${own.batch}/cancel`, headers: jsonHeaders, body: '{"', write: true });
    await check(cases);
  });

  it('Content-Type, Content-Encoding and bodies where none belongs', async () => {
    const body = JSON.stringify(validBatch());
    const cases: Case[] = [];
    const types = [
      undefined,
      'text/plain',
      'application/x-www-form-urlencoded',
      'application/json; charset=utf-16',
      'application/json; charset=latin1',
      'application/json; charset=nonsense',
      'application/jsonx',
      'application/*',
      '*/*',
      'multipart/form-data',
      'multipart/form-data; boundary=x',
      'multipart/form-data; boundary=',
      '\u00ff\u00fe/json',
      'a'.repeat(5_000),
    ];
    for (const path of ['/v1/audio/batches', '/v1/books', '/v1/webhooks', '/v1/playback-urls']) {
      for (const type of types) cases.push({ name: `Content-Type ${type?.slice(0, 40)}`, method: 'POST', path, headers: type === undefined ? {} : { 'Content-Type': type }, body, write: true });
      for (const encoding of ['gzip', 'deflate', 'br', 'compress', 'x-nonsense', 'gzip, gzip']) {
        cases.push({ name: `Content-Encoding ${encoding} of garbage`, method: 'POST', path, headers: { ...jsonHeaders, 'Content-Encoding': encoding }, body: Buffer.from([0x1f, 0x8b, 0x08, 0x00, 1, 2, 3, 4, 5]), write: true });
      }
      cases.push({ name: 'bytes that are not UTF-8 in a JSON string', method: 'POST', path, headers: jsonHeaders, body: Buffer.concat([Buffer.from('{"title":"'), Buffer.from([0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x80]), Buffer.from('"}')]), write: true });
    }
    // Bodies of every kind on reads, and on routes that take none.
    for (const [method, path] of [...FIXED_ROUTES.filter(([m]) => m === 'GET'), ['GET', `/v1/audio/batches/${own.batch}`], ['GET', `/v1/audio/tracks/${own.track}/audio`], ['POST', '/v1/stream-tokens'], ['POST', `/v1/books/${others.book}/soundscapes`], ['DELETE', `/v1/webhooks/${own.batch}`]] as const) {
      for (const [what, b, type] of [
        ['broken JSON', '{"', 'application/json'],
        ['a JSON array', '[1,2]', 'application/json'],
        ['form data', 'a=1&b=2', 'application/x-www-form-urlencoded'],
        ['a multipart without parts', '--x--', 'multipart/form-data; boundary=x'],
      ] as const) {
        // (A stream token is made from the Authorization header alone, whatever the body: it writes nothing.)
        cases.push({ name: `${what} on ${method}`, method, path, headers: { 'Content-Type': type }, body: b, write: method !== 'GET' && path !== '/v1/stream-tokens' });
      }
    }
    await check(cases);
  });

  it('multipart uploads that are broken', async () => {
    const part = (headers: string, content: string) => `--b\r\n${headers}\r\n\r\n${content}\r\n`;
    const bodies: [string, string][] = [
      ['no file', `${part('Content-Disposition: form-data; name="title"', 't')}--b--\r\n`],
      ['two files', `${part('Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain', 'a')}${part('Content-Disposition: form-data; name="file"; filename="b.txt"\r\nContent-Type: text/plain', 'b')}--b--\r\n`],
      ['a file in another field', `${part('Content-Disposition: form-data; name="other"; filename="a.txt"\r\nContent-Type: text/plain', 'a')}--b--\r\n`],
      ['no closing boundary', part('Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain', 'text')],
      ['a part without headers', `--b\r\n\r\nx\r\n--b--\r\n`],
      ['a malformed part header', `--b\r\nContent-Disposition form-data\r\n\r\nx\r\n--b--\r\n`],
      ['a title with NUL', `${part('Content-Disposition: form-data; name="title"', 'a\u0000b')}${part('Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain', 'text')}--b--\r\n`],
      ['a title too long', `${part('Content-Disposition: form-data; name="title"', 'x'.repeat(400))}${part('Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain', 'text')}--b--\r\n`],
      ['a title field twice', `${part('Content-Disposition: form-data; name="title"', 'a')}${part('Content-Disposition: form-data; name="title"', 'b')}${part('Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain', 'text')}--b--\r\n`],
      ['a field name with NUL', `${part('Content-Disposition: form-data; name="ti\u0000tle"', 'a')}${part('Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain', 'text')}--b--\r\n`],
      ['a title field of [] form', `${part('Content-Disposition: form-data; name="title[]"', 'a')}${part('Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain', 'text')}--b--\r\n`],
      ['a .pdf that is not one', `${part('Content-Disposition: form-data; name="file"; filename="a.pdf"\r\nContent-Type: application/pdf', '%PDF-1.4 garbage')}--b--\r\n`],
      ['a .txt that is binary', `${part('Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain', 'a\u0000b')}--b--\r\n`],
      ['an empty .txt', `${part('Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain', '')}--b--\r\n`],
      ['a .png', `${part('Content-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png', 'x')}--b--\r\n`],
      ['a file over the limit', `${part('Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain', 'x '.repeat(200 * 1024))}--b--\r\n`],
      ['a field over its size', `${part('Content-Disposition: form-data; name="title"', 'x'.repeat(20_000))}--b--\r\n`],
      ['too many fields', `${Array.from({ length: 12 }, (_, i) => part(`Content-Disposition: form-data; name="f${i}"`, 'x')).join('')}--b--\r\n`],
      ['garbage', '\u0000\u0001\u0002'],
    ];
    await check(bodies.map(([what, text]) => ({ name: `upload: ${what}`, method: 'POST', path: '/v1/books', headers: { 'Content-Type': 'multipart/form-data; boundary=b' }, body: Buffer.from(text, 'latin1'), write: true })));
  });

  it('query strings: limits, cursors, statuses, dates and repeated keys', async () => {
    const rand = generator(SEED + 1);
    const cases: Case[] = [];
    const lists = ['/v1/audio/batches', '/v1/books', `/v1/webhooks/${own.webhook}/deliveries`];
    for (const path of lists) {
      for (const limit of BAD_LIMITS) cases.push({ name: `limit=${limit}`, method: 'GET', path: path + q({ limit }) });
      for (const cursor of BAD_CURSORS()) cases.push({ name: `cursor=${cursor.slice(0, 40)}`, method: 'GET', path: path + q({ cursor }) });
      cases.push({ name: 'limit twice', method: 'GET', path: path + q({ limit: ['1', '2'] }) });
      cases.push({ name: 'cursor twice', method: 'GET', path: path + q({ cursor: ['a', 'b'] }) });
      cases.push({ name: 'bracketed keys', method: 'GET', path: `${path}?limit[]=1&cursor[a]=b&status[$ne]=x` });
      cases.push({ name: 'a thousand and one keys', method: 'GET', path: `${path}?${Array.from({ length: 1_001 }, (_, i) => `k${i}=1`).join('&')}&limit=0` });
      cases.push({ name: 'a query that is not percent-encoding', method: 'GET', path: `${path}?limit=%ZZ&cursor=%` });
      for (let i = 0; i < 10; i++) {
        const params = { limit: rand.pick(BAD_LIMITS), cursor: rand.pick(BAD_CURSORS()), status: rand.pick(['', 'ACTIVE', 'pending,failed', 'ready', '%00', 'x'.repeat(300)]) };
        cases.push({ name: `random ${JSON.stringify(params).slice(0, 80)}`, method: 'GET', path: path + q(params) });
      }
    }
    for (const status of ['', 'ACTIVE', 'pending,failed', '%00', '%ED%A0%80', 'x'.repeat(5_000)]) {
      for (const path of ['/v1/audio/batches', '/v1/books']) cases.push({ name: `status=${status.slice(0, 20)}`, method: 'GET', path: path + q({ status }) });
    }
    for (const visionId of ['', '%00', '%ED%A0%80', '%C0%80', 'x'.repeat(300), '%FF%FE']) {
      cases.push({ name: `visionId=${visionId.slice(0, 20)}`, method: 'GET', path: `/v1/audio/batches${q({ visionId })}` });
    }
    const admin = { Authorization: `Bearer ${adminToken}` };
    for (const since of ['', 'yesterday', '0000-01-01', '0001-01-01T00:00:00+14:00', '0001-01-01', '9999-12-31T23:59:59-14:00', '2026-02-30', '2026-13-01', '2026-01-01T25:00:00Z', '+275760-09-13', '-000001-01-01', '2026-01-01T00:00:00', '2026-01-01T00:00:00+24:00', '1e309', '%00', 'x'.repeat(5_000)]) {
      cases.push({ name: `since=${since.slice(0, 30)}`, method: 'GET', path: `/v1/admin/analytics${q({ since })}`, headers: admin });
    }
    for (const params of <Record<string, string | string[]>[]>[{ limit: '0' }, { limit: '501' }, { limit: 'abc' }, { status: 'x' }, { status: ['active', 'failed'] }, { limit: '1e309' }]) {
      cases.push({ name: `admin batches ${JSON.stringify(params)}`, method: 'GET', path: `/v1/admin/batches${q(params)}`, headers: admin });
    }
    await check(cases);
  });

  it('headers: Authorization, Idempotency-Key, Range, If-None-Match, If-Match, If-Range, the date preconditions and Last-Event-ID', async () => {
    const cases: Case[] = [];
    const auths = [
      '',
      'Bearer',
      'Bearer ',
      'Bearer a',
      'Bearer a.b.c',
      'Bearer a.b',
      `Bearer ${tokenA} ${tokenA}`,
      `Basic ${Buffer.from('a:b').toString('base64')}`,
      `bearer\t${tokenA}x`,
      `Bearer ${'a'.repeat(8_000)}`,
      `Bearer ${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"user-a","exp":9999999999}').toString('base64url')}.`,
      `Bearer ${tokenB.split('.').slice(0, 2).join('.')}.${tokenA.split('.')[2]}`,
      'Bearer \u00ff\u00fe\u00e9',
      `Bearer ${streamTokenA}`,
    ];
    for (const authorization of auths) {
      for (const [method, path] of [['GET', '/v1/audio/batches'], ['POST', '/v1/audio/batches'], ['GET', `/v1/audio/batches/${own.batch}/events`], ['GET', `/v1/audio/tracks/${own.track}/audio`]] as const) {
        cases.push({ name: `Authorization ${authorization.slice(0, 30)}`, method, path, headers: { Authorization: authorization, ...jsonHeaders }, body: method === 'POST' ? JSON.stringify(validBatch()) : undefined, write: method === 'POST' });
      }
    }
    for (const query of ['?access_token=', '?access_token=x', `?access_token=${tokenA}&access_token=${tokenA}`, '?playback_token=x', `?playback_token=${streamTokenA}`]) {
      cases.push({ name: `token in the query ${query.slice(0, 30)}`, method: 'GET', path: `/v1/audio/tracks/${own.track}/audio${query}`, headers: { Authorization: '' } });
      cases.push({ name: `token in the query ${query.slice(0, 30)}`, method: 'GET', path: `/v1/books/${own.book}/events${query}`, headers: { Authorization: '' } });
    }
    // Idempotency-Key with a body that is bad: nothing written whatever the key.
    for (const key of ['', ' ', 'a'.repeat(201), 'a'.repeat(10_000), '\u00ff\u00fe\u00e9', 'key\tkey', ['a', 'b']]) {
      cases.push({ name: `Idempotency-Key ${String(key).slice(0, 20)}`, method: 'POST', path: '/v1/audio/batches', headers: { ...jsonHeaders, 'Idempotency-Key': key }, body: JSON.stringify({ ...validBatch(), voice: 'nobody' }), write: true });
    }
    for (const key of ['', 'a'.repeat(201), 'a'.repeat(10_000)]) {
      cases.push({ name: `Idempotency-Key ${key.slice(0, 20)} on a valid body`, method: 'POST', path: '/v1/audio/batches', headers: { ...jsonHeaders, 'Idempotency-Key': key }, body: JSON.stringify(validBatch()), write: true });
    }
    const ranges = ['bytes=', 'bytes=-', 'bytes=-0', 'bytes=5-2', 'bytes=1000-', 'bytes=99999999999999999999-', 'bytes=0-99999999999999999999999', `bytes=-${'9'.repeat(400)}`, 'bytes=0-0,1-1', 'items=0-1', 'bytes=1e3-', 'bytes = 0-1', 'bytes=-1-2', 'bytes=0--1', 'bytes=\u00ff', 'x'.repeat(5_000)];
    for (const range of ranges) {
      for (const extra of <Record<string, string>[]>[{}, { 'If-Range': '"nope"' }, { 'If-Range': 'Wed, 21 Oct 2015 07:28:00 GMT' }]) {
        cases.push({ name: `Range ${range.slice(0, 30)} ${JSON.stringify(extra)}`, method: 'GET', path: `/v1/audio/tracks/${own.track}/audio`, headers: { Range: range, ...extra } });
      }
    }
    for (const tag of ['', '*', ',,,', 'W/', 'W/""', '"x"', `${'"x",'.repeat(1_000)}"y"`, '\u00ff']) {
      cases.push({ name: `If-None-Match ${tag.slice(0, 20)}`, method: 'GET', path: `/v1/audio/tracks/${own.track}/audio`, headers: { 'If-None-Match': tag, Range: 'bytes=0-1' } });
      cases.push({ name: `If-Match ${tag.slice(0, 20)}`, method: 'GET', path: `/v1/audio/tracks/${own.track}/audio`, headers: { 'If-Match': tag, Range: 'bytes=0-1' } });
    }
    for (const date of ['', 'x', '2020', 'Sun, 30 Feb 1994 08:49:37 GMT', 'Sun, 06 Nov 99999 08:49:37 GMT', 'Sunday, 06-Nov-94 99:49:37 GMT', 'Sun Nov 99 08:49:37 1994', '\u00ff']) {
      for (const field of ['If-Modified-Since', 'If-Unmodified-Since']) {
        cases.push({ name: `${field} ${date.slice(0, 20)}`, method: 'GET', path: `/v1/audio/tracks/${own.track}/audio`, headers: { [field]: date } });
      }
    }
    for (const id of ['', 'x', '0', '0-0', '-1', '1-', '$', '+', '-', '18446744073709551616-0', '0-18446744073709551616', `${'9'.repeat(30)}-1`, '1.5-1', '\u00ff', 'a'.repeat(5_000), 'end-1', 'end-x', 'end-99999999999999999999']) {
      for (const path of [`/v1/audio/batches/${own.batch}/events`, `/v1/books/${own.book}/events`]) {
        cases.push({ name: `Last-Event-ID ${id.slice(0, 30)}`, method: 'GET', path, headers: { 'Last-Event-ID': id } });
        cases.push({ name: `lastEventId=${id.slice(0, 30)}`, method: 'GET', path: `${path}${q({ lastEventId: id })}` });
      }
    }
    await check(cases);
  });

  it('wrong methods on every route', async () => {
    const cases: Case[] = [];
    const paths = [...FIXED_ROUTES.map(([, p]) => p), ...ROUTES.map((r) => r.path(r.kind ? own[r.kind] : ''))];
    for (const path of new Set(paths)) {
      for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'PROPFIND', 'HEAD']) {
        if (FIXED_ROUTES.some(([m, p]) => m === method && p === path) || ROUTES.some((r) => r.method === method && r.path(r.kind ? own[r.kind] : '') === path)) continue;
        // GET routes answer HEAD, and a read route answered by another method is fine: each stays below 500.
        const write = !['GET', 'HEAD', 'OPTIONS'].includes(method);
        cases.push({ name: `${method} on ${path}`, method, path, headers: jsonHeaders, body: method === 'GET' || method === 'HEAD' ? undefined : '{}', write });
      }
    }
    for (const path of ['/', '/healthz', '/readyz', '/metrics', '/openapi.json', '/docs', '/docs/assets/%ZZ', '/docs/assets/..%2F..%2Fpackage.json', '/status-page/%ZZ', '/status-page/__proto__', '/status-page/..%2Fapp.ts', '/admin/queues', '/v1', '/v1/', '//v1/audio/batches', '/v1/audio/batches/', '/v1/audio//batches', '/%ZZ', '/v1/%00']) {
      cases.push({ name: `GET ${path}`, method: 'GET', path, headers: { Authorization: `Basic ${Buffer.from(':').toString('base64')}` } });
      cases.push({ name: `POST ${path}`, method: 'POST', path, headers: jsonHeaders, body: '{"', write: true });
    }
    await check(cases);
  });

  it('requests Node itself refuses (headers too large, bytes no header may hold) still answer in the error shape', async () => {
    const raw = (head: string) =>
      new Promise<string>((resolve, reject) => {
        const url = new URL(api.url);
        const socket = connect(Number(url.port), url.hostname);
        const chunks: Buffer[] = [];
        socket.on('data', (c: Buffer) => chunks.push(c));
        socket.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
        socket.on('error', reject);
        socket.write(head, 'latin1');
      });
    const requests = [
      ['a header larger than the server takes', `POST /v1/audio/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenA}\r\nIdempotency-Key: ${'k'.repeat(20_000)}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`],
      ['a header with a NUL byte', `GET /v1/audio/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokenA}\r\nX-A: a\u0000b\r\nConnection: close\r\n\r\n`],
      ['a request line that is not HTTP', 'HELLO\r\n\r\n'],
      ['two Content-Lengths that disagree', `POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}`],
      ['Content-Length with Transfer-Encoding', `POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n`],
      ['a broken chunk', `POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`],
    ] as const;
    const failures: string[] = [];
    for (const [what, head] of requests) {
      const before = await digest();
      const answer = await raw(head);
      const [statusLine = '', rest = ''] = answer.split(/\r\n/, 1).concat(answer.slice(answer.indexOf('\r\n\r\n') + 4));
      const status = Number(statusLine.split(' ')[1]);
      const headers = answer.slice(0, answer.indexOf('\r\n\r\n'));
      const found = problems({ name: what, method: 'POST', path: '' }, { status, contentType: /content-type: ([^\r\n]*)/i.exec(headers)?.[1] ?? '', body: rest });
      if (!(status >= 400 && status < 500)) found.push(`answered ${statusLine}`);
      if ((await digest()) !== before) found.push('wrote to the database');
      if (found.length > 0) failures.push(`${what}: ${found.join('; ')}`);
    }
    expect(failures).toEqual([]);
  });
});
