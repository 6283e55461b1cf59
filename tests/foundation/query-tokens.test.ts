import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, tokenFor, type TestApi } from '../helpers/app';
import { createTestEnv, type TestEnv } from '../helpers/services';

// Tokens in URLs end up in access logs, proxies' logs and browser history: the query string
// carries only the narrow, short-lived tokens the API signs for it, never a user's own token
// or the static service token.

const SERVICE_TOKEN = 'service-token-that-is-long-enough-for-tests';
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ AUTH_SERVICE_TOKEN: SERVICE_TOKEN });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

describe('?access_token= on an event stream', () => {
  it('takes a stream token, and refuses a user token and the service token', async () => {
    const batch = await readJson(
      await api.request('/v1/audio/batches', { method: 'POST', json: { visionId: 'query-tokens', sections: [{ key: 'a', text: 'Hello there.' }], variants: ['voice_only'], voice: 'alloy' } }),
    );
    expect(batch.id).toBeDefined();
    const path = `/v1/audio/batches/${batch.id}/events`;
    const { token: stream } = await readJson(await api.request('/v1/stream-tokens', { method: 'POST' }));
    const byStreamToken = await fetch(`${api.url}${path}?access_token=${stream}`, { method: 'HEAD' });
    expect(byStreamToken.status).toBe(200);

    for (const [what, token] of [['a user token', await tokenFor('user-a')], ['the service token', SERVICE_TOKEN]] as const) {
      for (const method of ['GET', 'HEAD']) {
        const res = await fetch(`${api.url}${path}?access_token=${encodeURIComponent(token)}`, { method });
        expect(res.status, `${what} ${method}`).toBe(401);
        if (method === 'GET') expect((await readJson(res)).error.message).toBe('?access_token= takes a stream token from POST /v1/stream-tokens');
      }
    }
    // The same tokens as a bearer token are what they always were.
    expect((await fetch(`${api.url}${path}`, { method: 'HEAD', headers: { Authorization: `Bearer ${await tokenFor('user-a')}` } })).status).toBe(200);
    expect((await fetch(`${api.url}/v1/admin/batches`, { headers: { Authorization: `Bearer ${SERVICE_TOKEN}` } })).status).toBe(200);
  });
});
