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

describe('tokens the API mints', () => {
  const expOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).exp as number;

  it('never outlive the token they were minted with, and say so in expires_in', async () => {
    const now = Math.floor(Date.now() / 1000);
    const short = await tokenFor('user-short', { expiresIn: now + 20 });
    const asShort = { Authorization: `Bearer ${short}` };

    const streamAnswer = await readJson(await api.request('/v1/stream-tokens', { method: 'POST', user: null, headers: asShort }));
    expect(expOf(streamAnswer.token)).toBeLessThanOrEqual(now + 20);
    expect(streamAnswer.expires_in).toBeGreaterThan(0);
    expect(streamAnswer.expires_in).toBeLessThanOrEqual(20);

    const batch = await readJson(
      await api.request('/v1/audio/batches', { method: 'POST', user: null, headers: asShort, json: { visionId: 'short-token', sections: [{ key: 'a', text: 'Hello.' }], variants: ['voice_only'], voice: 'alloy' } }),
    );
    const track = (await readJson(await api.request(`/v1/audio/batches/${batch.id}`, { user: null, headers: asShort }))).tracks[0];
    const playback = await readJson(await api.request('/v1/playback-urls', { method: 'POST', user: null, headers: asShort, json: { audio_url: `/v1/audio/tracks/${track.id}/audio` } }));
    expect(expOf(new URL(playback.url, api.url).searchParams.get('playback_token')!)).toBeLessThanOrEqual(now + 20);
    expect(playback.expires_in).toBeLessThanOrEqual(20);

    // A token that lives longer than the settings' lifetimes gets the settings' lifetimes.
    const long = await readJson(await api.request('/v1/stream-tokens', { method: 'POST' }));
    expect(long.expires_in).toBe(env.config.STREAM_TOKEN_TTL_SECONDS);
    // The service token has no expiry of its own: the setting's lifetime too.
    const service = await readJson(await api.request('/v1/stream-tokens', { method: 'POST', user: null, headers: { Authorization: `Bearer ${SERVICE_TOKEN}` } }));
    expect(service.expires_in).toBe(env.config.STREAM_TOKEN_TTL_SECONDS);
  });
});
