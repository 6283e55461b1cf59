import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createTestEnv, type TestEnv } from '../helpers/services';

let env: TestEnv;
let api: TestApi;
beforeAll(async () => {
  // A small book limit, so that a too-large book body is cheap to send.
  env = await createTestEnv({ BOOK_MAX_UPLOAD_BYTES: String(1024 * 1024), WEBHOOK_ALLOW_PRIVATE: 'true' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

describe('API description', () => {
  it('serves /openapi.json whose every path is a mounted route', async () => {
    const doc = await readJson(await fetch(`${api.url}/openapi.json`));
    expect(doc.openapi).toBe('3.1.0');
    // Request bodies are the routes' own zod schemas, limits and strictness included.
    const body = (path: string) => doc.paths[path].post.requestBody.content['application/json'].schema;
    expect(body('/v1/audio/batches').properties.sections.maxItems).toBe(14);
    expect(body('/v1/books')).toMatchObject({ additionalProperties: false, properties: { pages: { items: { maxLength: 50_000 } } } });
    expect(body('/v1/webhooks')).toMatchObject({ additionalProperties: false, properties: { url: { maxLength: 2000 } } });
    expect(body('/v1/playback-urls')).toMatchObject({ additionalProperties: false, required: ['audio_url'], properties: { audio_url: { maxLength: 200 } } });
    for (const [path, methods] of Object.entries<Record<string, unknown>>(doc.paths)) {
      for (const method of Object.keys(methods)) {
        const url = path.replace(/\{id\}/g, '00000000-0000-4000-8000-000000000000');
        const bodiless = ['get', 'head', 'delete'].includes(method);
        const res = await api.request(url, { method: method.toUpperCase(), user: 'docs-user', headers: bodiless ? {} : { 'Content-Type': 'application/json' }, body: bodiless ? undefined : '{}' });
        // A HEAD's answer has the GET's headers and no body.
        const body = method !== 'head' && res.headers.get('content-type')?.includes('json') ? await readJson(res) : null;
        expect(body?.error?.message ?? '', `${method} ${path}`).not.toMatch(/^no route/);
        expect(res.status, `${method} ${path}`).toBeLessThan(500);
      }
    }
  });

  it('documents every /v1 route the code mounts, and no other', async () => {
    const doc = await readJson(await fetch(`${api.url}/openapi.json`));
    // The routes as the route files declare them (router.get('/path', ...)); v1.routes.ts
    // mounts the ones it imports under /v1.
    const dir = fileURLToPath(new URL('../../apps/api/src/routes/', import.meta.url));
    const v1 = readFileSync(dir + 'v1.routes.ts', 'utf8');
    const mounted = new Set([...v1.matchAll(/from '\.\/([a-z-]+)\.routes'/g)].map((m) => m[1]!));
    const routes = new Set<string>();
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.routes.ts'))) {
      const name = file.replace('.routes.ts', '');
      const prefix = mounted.has(name) || name === 'v1' ? '/v1' : '';
      for (const m of readFileSync(dir + file, 'utf8').matchAll(/router\.(get|post|put|patch|delete)\(\s*'([^']+)'/g)) {
        routes.add(`${m[1]} ${prefix}${m[2]!.replace(/:(\w+)/g, '{$1}')}`);
      }
    }
    const v1Routes = [...routes].filter((r) => r.includes(' /v1/')).sort();
    expect(v1Routes.length).toBeGreaterThan(20);
    const documented = Object.entries<Record<string, unknown>>(doc.paths)
      .filter(([path]) => path.startsWith('/v1/'))
      .flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method} ${path}`))
      .sort();
    // Express answers HEAD on every GET route: documented where a client has a use for it.
    for (const head of documented.filter((op) => op.startsWith('head '))) expect(documented, head).toContain(head.replace(/^head /, 'get '));
    expect(documented.filter((op) => !op.startsWith('head '))).toEqual(v1Routes);
  });

  it('describes the tokens a URL may carry as security schemes, and HEAD where a player or a stream client uses it', async () => {
    const doc = await readJson(await fetch(`${api.url}/openapi.json`));
    expect(doc.components.securitySchemes).toMatchObject({
      streamToken: { type: 'apiKey', in: 'query', name: 'access_token' },
      playbackToken: { type: 'apiKey', in: 'query', name: 'playback_token' },
    });
    for (const path of ['/v1/audio/tracks/{id}/audio', '/v1/soundscapes/{id}/audio']) {
      for (const method of ['get', 'head']) expect(doc.paths[path][method]?.security, `${method} ${path}`).toEqual([{ bearer: [] }, { playbackToken: [] }]);
    }
    for (const path of ['/v1/audio/batches/{id}/events', '/v1/books/{id}/events']) {
      for (const method of ['get', 'head']) expect(doc.paths[path][method]?.security, `${method} ${path}`).toEqual([{ bearer: [] }, { streamToken: [] }]);
    }
  });

  it('lists the statuses each /v1 route answers, and the parameters it reads, as the code does', async () => {
    const doc = await readJson(await fetch(`${api.url}/openapi.json`));
    const adminToken = await tokenFor('docs-admin', { role: 'admin' });
    const streamToken = (await readJson(await api.request('/v1/stream-tokens', { method: 'POST', user: 'docs-user' }))).token as string;
    const ID = '00000000-0000-4000-8000-000000000000';
    // A webhook of the user's, so that its deliveries' query is read (after the 404 check).
    const webhook = await readJson(await api.request('/v1/webhooks', { method: 'POST', user: 'docs-user', json: { url: 'http://127.0.0.1:9/hook', events: ['batch.completed'] } }));
    expect(webhook.id).toBeDefined();
    type Operation = { parameters?: { name: string; in: string; schema: { type?: string; enum?: string[]; maximum?: number } }[]; responses: Record<string, unknown>; requestBody?: { content: Record<string, unknown> } };
    for (const [path, methods] of Object.entries<Record<string, Operation>>(doc.paths)) {
      if (!path.startsWith('/v1/')) continue;
      const url = path.replace(/\{id\}/g, path.startsWith('/v1/webhooks/') ? webhook.id : ID);
      for (const [method, operation] of Object.entries(methods)) {
        const what = `${method} ${path}`;
        const listed = (status: number, how: string) => expect(Object.keys(operation.responses), `${what} ${how} answers ${status}`).toContain(String(status));
        const send = (target: string, init: RequestInit & { user?: string | null } = {}) =>
          path.startsWith('/v1/admin/') && init.user !== null
            ? fetch(`${api.url}${target}`, { ...init, method: method.toUpperCase(), headers: { Authorization: `Bearer ${adminToken}`, ...(init.headers as Record<string, string>) } })
            : api.request(target, { user: 'docs-user', ...init, method: method.toUpperCase() });

        // An id that is not percent-encoding is refused before any route reads it.
        if (path.includes('{id}')) listed((await send(path.replace(/\{id\}/g, '%ZZ'))).status, 'with the id %ZZ');

        // Without a token: 401, on every route.
        const anonymous = await send(url, { user: null });
        listed(anonymous.status, 'without a token');
        expect(anonymous.status, what).toBe(401);
        // Admin routes refuse a user's token.
        if (path.startsWith('/v1/admin/')) listed((await api.request(url, { user: 'docs-user' })).status, "with a user's token");

        // A stream token in ?access_token= is read on the routes that say so, and only there.
        if (method === 'get') {
          const withStreamToken = await fetch(`${api.url}${url}?access_token=${streamToken}`);
          const named = (operation.parameters ?? []).some((p) => p.in === 'query' && p.name === 'access_token');
          expect(withStreamToken.status !== 401, `${what} reads ?access_token=`).toBe(named);
          await withStreamToken.body?.cancel();
        }

        // Every documented query parameter is read under its name, as typed: a value of the
        // wrong type or out of range is a 400, listed; a valid one is accepted.
        for (const p of (operation.parameters ?? []).filter((q) => q.in === 'query')) {
          const bad = p.schema.enum ? 'not-a-value' : p.schema.type === 'integer' ? String((p.schema.maximum ?? 1e6) + 1) : null;
          if (bad === null) continue;
          const refused = await send(`${url}?${p.name}=${bad}`);
          listed(refused.status, `with ${p.name}=${bad}`);
          expect(refused.status, `${what} ?${p.name}=${bad}`).toBe(400);
          const good = p.schema.enum ? p.schema.enum[0]! : String(p.schema.maximum ?? 1);
          const accepted = await send(`${url}?${p.name}=${good}`);
          await accepted.body?.cancel();
          expect(accepted.status, `${what} ?${p.name}=${good}`).not.toBe(400);
        }

        // A JSON body: the wrong content type, malformed JSON and one too large.
        if (operation.requestBody?.content['application/json']) {
          const wrongType = await send(url, { headers: { 'Content-Type': 'text/plain' }, body: 'hello' });
          listed(wrongType.status, 'with text/plain');
          expect(wrongType.status, what).toBe(415);
          const malformed = await send(url, { headers: { 'Content-Type': 'application/json' }, body: '{' });
          listed(malformed.status, 'with malformed JSON');
          const tooLarge = await send(url, { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ padding: 'x'.repeat(2_000_000) }) });
          listed(tooLarge.status, 'with a 2 MB body');
          expect(tooLarge.status, what).toBe(413);
        }
      }
    }
  });

  it('describes the stream cap as README does: across every API process', async () => {
    const doc = await readJson(await fetch(`${api.url}/openapi.json`));
    for (const path of ['/v1/audio/batches/{id}/events', '/v1/books/{id}/events']) {
      const description = doc.paths[path].get.responses['429'].description as string;
      expect(description, path).toMatch(/every API process/);
      expect(description, path).not.toMatch(/in this API process/);
    }
  });

  it('serves browsable docs from the installed package', async () => {
    const page = await fetch(`${api.url}/docs`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('swagger-ui-bundle.js');
    expect((await fetch(`${api.url}/docs/assets/swagger-ui-bundle.js`)).status).toBe(200);
  });
});
