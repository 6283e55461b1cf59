import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '@soundqueue/shared/config';
import { createAuth } from '../../apps/api/src/auth';
import { readJson, startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createTestEnv, TEST_JWT_SECRET, type TestEnv } from '../helpers/services';

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

const bearer = (token: string) => ({ headers: { Authorization: `Bearer ${token}` }, user: null });

describe('health', () => {
  it('answers liveness and readiness', async () => {
    expect((await api.request('/healthz', { user: null })).status).toBe(200);
    const ready = await api.request('/readyz', { user: null });
    expect(ready.status).toBe(200);
    expect(await readJson(ready)).toMatchObject({ status: 'ready', checks: { redis: 'ok', postgres: 'ok' } });
  });
});

describe('auth', () => {
  it('refuses a request without a token', async () => {
    const res = await api.request('/v1/audio/variants', { user: null });
    expect(res.status).toBe(401);
    expect(await readJson(res)).toEqual({ error: { code: 'unauthorized', message: 'missing Authorization: Bearer <token>', details: null } });
  });

  it('refuses a token signed with another secret', async () => {
    const res = await api.request('/v1/audio/variants', bearer(await tokenFor('u', { secret: 'another-secret-that-is-long-enough!!' })));
    expect(res.status).toBe(401);
    expect((await readJson(res)).error.message).toBe('token signature is invalid');
  });

  it('refuses an expired token', async () => {
    const expired = await tokenFor('u', { expiresIn: Math.floor(Date.now() / 1000) - 60 });
    const res = await api.request('/v1/audio/variants', bearer(expired));
    expect(res.status).toBe(401);
    expect((await readJson(res)).error.message).toBe('token expired');
  });

  it('refuses a correctly signed token without exp, which would be good for ever', async () => {
    const lasting = await new SignJWT({ role: 'user' }).setProtectedHeader({ alg: 'HS256' }).setSubject('u').setIssuedAt().sign(new TextEncoder().encode(TEST_JWT_SECRET));
    const res = await api.request('/v1/audio/variants', bearer(lasting));
    expect(res.status).toBe(401);
    expect(await readJson(res)).toEqual({ error: { code: 'unauthorized', message: 'token has no exp claim; tokens must expire', details: null } });
  });

  it('refuses a correctly signed token whose sub has control characters or lone surrogates', async () => {
    // NUL reached PostgreSQL as the user id, and every route that reads rows answered 500.
    for (const sub of ['user\u0000a', 'user\na', 'user\u007f', 'user\u0085', 'user\ud800']) {
      for (const path of ['/v1/audio/batches', '/v1/webhooks', '/v1/audio/variants']) {
        const res = await api.request(path, bearer(await tokenFor(sub)));
        expect(res.status, `${JSON.stringify(sub)} ${path}`).toBe(401);
        expect(await readJson(res)).toEqual({ error: { code: 'unauthorized', message: 'token has no usable sub claim', details: null } });
      }
    }
    // Any other character is a user id like another.
    expect((await api.request('/v1/audio/batches', bearer(await tokenFor('usér 😀 a')))).status).toBe(200);
  });

  it('refuses garbage and a malformed header', async () => {
    expect((await api.request('/v1/audio/variants', bearer('not.a.jwt'))).status).toBe(401);
    const res = await api.request('/v1/audio/variants', { headers: { Authorization: 'Basic abc' }, user: null });
    expect(res.status).toBe(401);
  });

  it('accepts a good token', async () => {
    const res = await api.request('/v1/audio/variants');
    expect(res.status).toBe(200);
    expect((await readJson(res)).variants.length).toBeGreaterThanOrEqual(4);
  });

  it('makes a dev token in development and refuses to start in production without auth', async () => {
    const dev = await createAuth(loadConfig({ NODE_ENV: 'development' }));
    expect(dev.devToken).toBeTruthy();
    expect(await dev.verify(dev.devToken!)).toEqual({ userId: 'demo-user', role: 'user' });
    await expect(createAuth(loadConfig({ NODE_ENV: 'production' }))).rejects.toThrow(/AUTH_JWT_SECRET.*AUTH_JWKS_URL/);
    const configured = await createAuth(loadConfig({ NODE_ENV: 'development', AUTH_JWT_SECRET: 'x'.repeat(32) }));
    expect(configured.devToken).toBeNull();
  });
});

describe('error shape', () => {
  it('for an unknown route', async () => {
    const res = await api.request('/v1/nothing-here');
    expect(res.status).toBe(404);
    expect(await readJson(res)).toEqual({ error: { code: 'not_found', message: 'no route for GET /v1/nothing-here', details: null } });
  });

  it('for malformed JSON', async () => {
    const res = await api.request('/v1/audio/batches', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"visionId":' });
    expect(res.status).toBe(400);
    expect((await readJson(res)).error.code).toBe('invalid_json');
  });

  it('for a body over the limit', async () => {
    const res = await api.request('/v1/audio/batches', { method: 'POST', json: { visionId: 'x'.repeat(2 * 1024 * 1024) } });
    expect(res.status).toBe(413);
    expect((await readJson(res)).error.code).toBe('payload_too_large');
  });

  it('for validation failures, with details', async () => {
    const res = await api.request('/v1/audio/batches', { method: 'POST', json: { visionId: '' } });
    expect(res.status).toBe(400);
    const body = await readJson(res);
    expect(body.error.code).toBe('validation_failed');
    expect(body.error.details).toEqual(expect.arrayContaining([expect.objectContaining({ path: 'body.visionId' })]));
  });

  it('for a body nested deeper than any request needs, refused before anything walks it', async () => {
    // 60,000 levels in 120 KB: the check that looks for unstorable strings used to copy the
    // path at every level and held the event loop for ~30 s on this body.
    const deep = `{"visionId":"v","sections":${'['.repeat(60_000)}${']'.repeat(60_000)}}`;
    const res = await api.request('/v1/audio/batches', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: deep });
    expect(res.status).toBe(400);
    const body = await readJson(res);
    expect(body.error.code).toBe('validation_failed');
    expect(body.error.message).toBe(`body.sections${'.0'.repeat(31)}: must not nest more than 32 levels deep`);
    // 32 levels are fine as far as nesting goes (the schema then says what is wrong).
    const fine = await api.request('/v1/audio/batches', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: `{"visionId":"v","sections":${'['.repeat(31)}${']'.repeat(31)}}`,
    });
    expect(fine.status).toBe(400);
    expect((await readJson(fine)).error.message).not.toMatch(/nest/);
  });

  it('for a wrong content type', async () => {
    const res = await api.request('/v1/audio/batches', { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'hello' });
    expect(res.status).toBe(415);
    expect((await readJson(res)).error.code).toBe('unsupported_media_type');
  });
});
