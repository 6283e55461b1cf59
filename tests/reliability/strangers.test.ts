import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, startTestWorker, tokenFor, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { waitFor } from '../helpers/wait';
import { postBook, waitForBook } from '../helpers/books';
import { openDb, type TestDb } from '../helpers/chaos';
import { openReliabilityLog } from '../helpers/reliability-log';
import { createTestEnv, TEST_JWT_SECRET, type TestEnv } from '../helpers/services';
import { fourSettingBook } from '../fixtures/books';

// Someone else's ids, no token, a bad token, the admin board without credentials, and
// paths that try to climb out of the audio routes. The owner's rows must come out of it
// exactly as they went in.
const log = openReliabilityLog('strangers');

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let db: TestDb;
const OWNER = 'owner-user';
const STRANGER = 'stranger-user';
const ids = { batch: '', set: '', track: '', book: '', scene: '', soundscape: '', webhook: '' };

beforeAll(async () => {
  env = await createTestEnv({ ADMIN_USER: 'ops', ADMIN_PASSWORD: 'board-password-123', SOUNDSCAPE_SECONDS: '2' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
  db = openDb(env.databaseUrl);
  const created = await createBatch(api, { visionId: 'private', sections: sampleSections(1, 'Mine'), variants: ['voice_only'], voice: 'alloy' }, { user: OWNER });
  expect(created.status).toBe(201);
  const batch = await waitFor(
    async () => {
      const current = await readJson(await api.request(`/v1/audio/batches/${created.body.id}`, { user: OWNER }));
      return current.status === 'completed' ? current : null;
    },
    { timeoutMs: 120_000, intervalMs: 200, what: "the owner's batch to complete" },
  );
  ids.batch = batch.id;
  ids.track = batch.tracks[0].id;
  ids.set = batch.tracks[0].set_id ?? (await db.one('select set_id from audio_tracks where id = $1', [ids.track])).set_id;
  const book = await postBook(api, { title: 'Private book', pages: fourSettingBook().slice(0, 2) }, OWNER);
  const done = await waitForBook(api, book.body.bookId, OWNER, 120_000);
  ids.book = done.bookId;
  const scene = await db.one('select s.id as scene, x.id as soundscape from scenes s join soundscapes x on x.scene_id = s.id where s.book_id = $1', [ids.book]);
  ids.scene = scene.scene;
  ids.soundscape = scene.soundscape;
  const hook = await api.request('/v1/webhooks', { method: 'POST', json: { url: 'https://93.184.216.34/hook', events: ['batch.completed'] }, user: OWNER });
  expect(hook.status).toBe(201);
  ids.webhook = (await readJson(hook)).id;
}, 240_000);

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await db?.close();
  await env?.cleanup();
  log.end();
});

/** Every /v1 route that names a row, with the owner's ids filled in. */
function ownedRoutes(): Array<[string, string]> {
  return [
    ['GET', `/v1/audio/batches/${ids.batch}`],
    ['GET', `/v1/audio/batches/${ids.batch}/events`],
    ['POST', `/v1/audio/batches/${ids.batch}/retry`],
    ['POST', `/v1/audio/batches/${ids.batch}/cancel`],
    ['GET', `/v1/audio/sets/${ids.set}`],
    ['GET', `/v1/audio/tracks/${ids.track}/audio`],
    ['GET', `/v1/books/${ids.book}`],
    ['GET', `/v1/books/${ids.book}/scenes`],
    ['GET', `/v1/books/${ids.book}/events`],
    ['POST', `/v1/books/${ids.book}/soundscapes`],
    ['GET', `/v1/soundscapes/${ids.soundscape}/audio`],
    ['GET', `/v1/webhooks/${ids.webhook}`],
    ['GET', `/v1/webhooks/${ids.webhook}/deliveries`],
    ['DELETE', `/v1/webhooks/${ids.webhook}`],
  ];
}

/** Every /v1 route, for the token checks. */
function allRoutes(): Array<[string, string]> {
  return [
    ['GET', '/v1/audio/variants'], ['GET', '/v1/audio/voices'], ['GET', '/v1/audio/batches'], ['POST', '/v1/audio/batches'],
    ['GET', '/v1/books'], ['POST', '/v1/books'], ['GET', '/v1/webhooks'], ['POST', '/v1/webhooks'], ['POST', '/v1/stream-tokens'],
    ['GET', '/v1/admin/analytics'], ['GET', '/v1/admin/batches'],
    ...ownedRoutes(),
  ];
}

async function call(method: string, path: string, headers: Record<string, string>): Promise<{ status: number; body: any }> {
  const res = await fetch(`${api.url}${path}`, {
    method,
    headers: { ...headers, ...(method === 'POST' ? { 'Content-Type': 'application/json' } : {}) },
    body: method === 'POST' ? '{}' : undefined,
  });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // an event stream or audio
  }
  return { status: res.status, body };
}

/** The owner's rows, to prove nothing a stranger did changed them. */
async function ownerState(): Promise<string> {
  const rows = await db.one(`select
      (select row_to_json(b) from audio_generation_batches b where id = $1) as batch,
      (select json_agg(t order by id) from audio_tracks t where batch_id = $1) as tracks,
      (select row_to_json(k) from books k where id = $2) as book,
      (select json_agg(s order by id) from soundscapes s where book_id = $2) as soundscapes,
      (select row_to_json(w) from webhook_endpoints w where id = $3) as webhook`, [ids.batch, ids.book, ids.webhook]);
  return JSON.stringify(rows);
}

const unsignedToken = (sub: string) =>
  `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 600 })).toString('base64url')}.`;

describe('another user', () => {
  it("gets 404 for every route that names the owner's rows, and changes nothing", async () => {
    await log.scenario(
      "Another user's ids on every route that names a row",
      `user "${STRANGER}" calling ${ownedRoutes().length} routes (GET, POST retry/cancel/soundscapes, DELETE, event streams, audio) with user "${OWNER}"'s ids`,
      async (r) => {
        const before = await ownerState();
        const stranger = { Authorization: `Bearer ${await tokenFor(STRANGER)}` };
        const owner = { Authorization: `Bearer ${await tokenFor(OWNER)}` };
        for (const [method, path] of ownedRoutes()) {
          const out = await call(method, path, stranger);
          expect(out.status, `${method} ${path}`).toBe(404);
          expect(out.body.error.code).toBe('not_found');
        }
        r.held(`${ownedRoutes().length}/${ownedRoutes().length} routes answered 404 not_found to the stranger`);
        // A stream token of the stranger's does not open the owner's streams either.
        const streamToken = (await (await call('POST', '/v1/stream-tokens', stranger)).body).token as string;
        expect((await call('GET', `/v1/audio/batches/${ids.batch}/events?access_token=${streamToken}`, {})).status).toBe(404);
        expect((await call('GET', `/v1/books/${ids.book}/events?access_token=${streamToken}`, {})).status).toBe(404);
        // Lists show the stranger nothing of the owner's.
        for (const path of ['/v1/audio/batches', '/v1/books', '/v1/webhooks']) {
          const list = await call('GET', path, stranger);
          expect(list.status).toBe(200);
          expect(JSON.stringify(list.body), path).not.toContain(ids.batch);
          expect(JSON.stringify(list.body), path).not.toContain(ids.book);
          expect(JSON.stringify(list.body), path).not.toContain(ids.webhook);
        }
        expect(await ownerState()).toBe(before);
        // The owner still gets every read.
        for (const [method, path] of ownedRoutes().filter(([m, p]) => m === 'GET' && !p.endsWith('/events'))) {
          expect((await call(method, path, owner)).status, path).toBe(200);
        }
        r.held("stream tokens of the stranger's 404 on the owner's streams; the stranger's lists hold none of the owner's ids");
        r.held("the owner's batch, tracks, book, soundscapes and webhook rows are byte-for-byte unchanged, and still 200 for the owner");
        r.measure('routes', ownedRoutes().length);
      },
    );
  }, 120_000);
});

describe('tokens', () => {
  it('missing, expired, wrongly signed, unsigned, tampered or malformed tokens get 401 on every route', async () => {
    await log.scenario(
      'Bad tokens on every /v1 route',
      'no Authorization, an expired JWT, a JWT signed with another secret, alg "none", a tampered payload, a token without sub, Basic auth, "Bearer" alone',
      async (r) => {
        const good = await tokenFor(STRANGER);
        const [header, , signature] = good.split('.');
        const tampered = `${header}.${Buffer.from(JSON.stringify({ sub: OWNER, role: 'admin', exp: Math.floor(Date.now() / 1000) + 600 })).toString('base64url')}.${signature}`;
        const noSub = await (async () => {
          const { SignJWT } = await import('jose');
          return new SignJWT({ role: 'user' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(new TextEncoder().encode(TEST_JWT_SECRET));
        })();
        const variants: Record<string, Record<string, string>> = {
          missing: {},
          expired: { Authorization: `Bearer ${await tokenFor(OWNER, { expiresIn: Math.floor(Date.now() / 1000) - 60 })}` },
          'wrong secret': { Authorization: `Bearer ${await tokenFor(OWNER, { secret: 'not-the-secret-but-long-enough-for-hs256' })}` },
          'alg none': { Authorization: `Bearer ${unsignedToken(OWNER)}` },
          tampered: { Authorization: `Bearer ${tampered}` },
          'no sub': { Authorization: `Bearer ${noSub}` },
          basic: { Authorization: `Basic ${Buffer.from('ops:board-password-123').toString('base64')}` },
          'bearer alone': { Authorization: 'Bearer' },
          garbage: { Authorization: 'Bearer not.a.jwt' },
        };
        const before = await ownerState();
        let checked = 0;
        for (const [name, headers] of Object.entries(variants)) {
          for (const [method, path] of allRoutes()) {
            const out = await call(method, path, headers);
            expect(out.status, `${name}: ${method} ${path}`).toBe(401);
            expect(out.body.error.code, `${name}: ${method} ${path}`).toBe('unauthorized');
            checked++;
          }
        }
        expect(await ownerState()).toBe(before);
        r.held(`${checked} requests (${Object.keys(variants).length} kinds × ${allRoutes().length} routes): all 401 unauthorized, nothing changed`);

        // ?access_token= is for event streams only, and only while it is valid.
        const owner = { Authorization: `Bearer ${await tokenFor(OWNER)}` };
        const stream = (await call('POST', '/v1/stream-tokens', owner)).body.token as string;
        expect((await call('GET', `/v1/audio/batches/${ids.batch}?access_token=${stream}`, {})).status).toBe(401);
        expect((await call('GET', `/v1/audio/tracks/${ids.track}/audio?access_token=${stream}`, {})).status).toBe(401);
        expect((await call('GET', `/v1/audio/batches/${ids.batch}/events?access_token=${stream}`, {})).status).toBe(200);
        const expiredStream = await tokenFor(OWNER, { expiresIn: Math.floor(Date.now() / 1000) - 1 });
        expect((await call('GET', `/v1/audio/batches/${ids.batch}/events?access_token=${expiredStream}`, {})).status).toBe(401);
        expect((await call('GET', `/v1/audio/batches/${ids.batch}/events?access_token=${stream}x`, {})).status).toBe(401);
        r.held('?access_token= opens event streams only (401 on a batch read and on audio), and not once expired or altered');

        const user = { Authorization: `Bearer ${await tokenFor(OWNER)}` };
        expect((await call('GET', '/v1/admin/analytics', user)).status).toBe(403);
        expect((await call('GET', '/v1/admin/batches', user)).status).toBe(403);
        r.held('a user token on /v1/admin/* → 403');
        r.measure('requests', checked + 9);
      },
    );
  }, 120_000);

  it('Bull Board wants its own credentials', async () => {
    await log.scenario(
      'Bull Board without (or with the wrong) credentials',
      'GET /admin/queues, its API and static files with no credentials, a wrong password, a bearer JWT, a malformed Basic header',
      async (r) => {
        const basic = (u: string, p: string) => ({ Authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });
        const page = await fetch(`${api.url}/admin/queues`, { headers: basic('ops', 'board-password-123') });
        expect(page.status).toBe(200);
        const html = await page.text();
        const asset = /(?:src|href)="([^"]*static[^"]+)"/.exec(html)?.[1];
        const paths = ['/admin/queues', '/admin/queues/', '/admin/queues/api/queues', `/admin/queues/api/queues/audio-tts/${ids.track}`, new URL(asset ?? 'static/x.js', `${api.url}/admin/queues/`).pathname];
        const attempts: Record<string, Record<string, string>> = {
          none: {},
          'wrong password': basic('ops', 'wrong'),
          'wrong user': basic('root', 'board-password-123'),
          'empty password': basic('ops', ''),
          'bearer JWT': { Authorization: `Bearer ${await tokenFor(OWNER, { role: 'admin' })}` },
          'malformed basic': { Authorization: 'Basic !!!' },
        };
        let checked = 0;
        for (const [name, headers] of Object.entries(attempts)) {
          for (const path of paths) {
            const res = await fetch(`${api.url}${path}`, { headers });
            expect(res.status, `${name} ${path}`).toBe(401);
            expect(res.headers.get('www-authenticate')).toMatch(/^Basic /);
            await res.body?.cancel();
            checked++;
          }
        }
        const put = await fetch(`${api.url}/admin/queues/api/queues/audio-tts/clean/failed`, { method: 'PUT' });
        expect(put.status).toBe(401);
        r.held(`${checked + 1} requests to the board, its API and static files without the right credentials: all 401 with a Basic challenge`);
        r.measure('requests', checked + 1);
      },
    );
  }, 60_000);
});

/** Sends a path exactly as written (fetch would normalise "../"). */
function rawGet(path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const url = new URL(api.url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, method: 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('latin1') }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('path traversal', () => {
  it('on audio routes and the status page is refused', async () => {
    await log.scenario(
      'Path traversal on audio routes and static files',
      'raw (unnormalised) paths with ../, %2e%2e%2f, %2f, backslashes, NUL and double encoding in track, soundscape and status-page paths',
      async (r) => {
        const auth = { Authorization: `Bearer ${await tokenFor(OWNER)}` };
        const climbs = [
          '../../../../etc/passwd', '..%2F..%2F..%2F..%2Fetc%2Fpasswd', '%2e%2e%2f%2e%2e%2fpackage.json', '..%5C..%5Cpackage.json',
          '%252e%252e%252fpackage.json', `${ids.track}%2F..%2F..%2Fpackage.json`, `${ids.track}%00`, '....//....//etc/passwd',
          `..%2F${ids.batch}%2F${ids.track}.mp3`, '%2Fetc%2Fpasswd',
        ];
        const paths = [
          ...climbs.map((c) => `/v1/audio/tracks/${c}/audio`),
          ...climbs.map((c) => `/v1/soundscapes/${c}/audio`),
          `/v1/audio/tracks/${ids.track}/audio/../../../../package.json`,
          `/v1/audio/tracks/${ids.track}/audio/..%2F..%2F..%2Fpackage.json`,
          `/v1/soundscapes/${ids.soundscape}/audio/..%2F..%2Fpackage.json`,
          '/status-page/..%2F..%2F..%2Fpackage.json', '/status-page/%2e%2e%2fapp.ts', '/status-page/..%5Cindex.html',
          '/status-page/../../package.json', '/status-page/app.js%00.html', '/status-page/%2e%2e',
        ];
        const statuses = new Map<number, number>();
        for (const path of paths) {
          const out = await rawGet(path, auth);
          statuses.set(out.status, (statuses.get(out.status) ?? 0) + 1);
          expect([400, 404], `${path} → ${out.status}`).toContain(out.status);
          expect(out.body, path).not.toMatch(/root:x:0:0|"name": ?"soundqueue"|"workspaces"/);
          expect(out.body, path).not.toMatch(/^ID3|\xff\xfb/);
        }
        // The real files still play for their owner, proving the refusals were not a blanket no.
        expect((await rawGet(`/v1/audio/tracks/${ids.track}/audio`, auth)).status).toBe(200);
        expect((await rawGet(`/v1/soundscapes/${ids.soundscape}/audio`, auth)).status).toBe(200);
        r.held(`${paths.length} traversal paths refused (${JSON.stringify(Object.fromEntries(statuses))}); none returned a file; the owner's real track and soundscape still 200`);
        r.measure('paths', paths.length);
      },
    );
  }, 60_000);
});
