import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '@soundqueue/shared/config';
import { createAuth, type Auth } from '../../apps/api/src/auth';
import { selectQueues } from '../../apps/worker/src/workers';
import { createApiContext, type ApiContext } from '../../apps/api/src/context';
import { createTestEnv } from '../helpers/services';

let server: Server;
let auth: Auth;
let rsa: Awaited<ReturnType<typeof generateKeyPair>>;
let ec: Awaited<ReturnType<typeof generateKeyPair>>;
let jwksUrl: string;

beforeAll(async () => {
  rsa = await generateKeyPair('RS256');
  ec = await generateKeyPair('ES256');
  const keys = [
    { ...(await exportJWK(rsa.publicKey)), kid: 'rsa-1', alg: 'RS256', use: 'sig' },
    { ...(await exportJWK(ec.publicKey)), kid: 'ec-1', alg: 'ES256', use: 'sig' },
  ];
  server = createServer((_req, res) => {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  auth = await createAuth(loadConfig({ NODE_ENV: 'production', AUTH_JWKS_URL: jwksUrl }));
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('auth with a JWKS URL', () => {
  it('accepts RS256 and ES256 tokens signed by a published key', async () => {
    const rs = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('jwks-user').setExpirationTime('5m').sign(rsa.privateKey);
    expect(await auth.verify(rs)).toEqual({ userId: 'jwks-user', role: 'user' });
    const es = await new SignJWT({ role: 'admin' }).setProtectedHeader({ alg: 'ES256', kid: 'ec-1' }).setSubject('ops').setExpirationTime('5m').sign(ec.privateKey);
    expect(await auth.verify(es)).toEqual({ userId: 'ops', role: 'admin' });
    expect(auth.devToken).toBeNull();
  });

  it('refuses a key it does not publish, and a token without sub', async () => {
    const other = await generateKeyPair('RS256');
    const forged = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('x').setExpirationTime('5m').sign(other.privateKey);
    await expect(auth.verify(forged)).rejects.toMatchObject({ status: 401 });
    const noSub = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setExpirationTime('5m').sign(rsa.privateKey);
    await expect(auth.verify(noSub)).rejects.toMatchObject({ status: 401, message: 'token has no usable sub claim' });
    const nulSub = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('jwks\u0000user').setExpirationTime('5m').sign(rsa.privateKey);
    await expect(auth.verify(nulSub)).rejects.toMatchObject({ status: 401, message: 'token has no usable sub claim' });
  });

  it('refuses a published key\'s token without exp, which would be good for ever', async () => {
    for (const [alg, kid, key] of [['RS256', 'rsa-1', rsa.privateKey], ['ES256', 'ec-1', ec.privateKey]] as const) {
      const lasting = await new SignJWT({}).setProtectedHeader({ alg, kid }).setSubject('jwks-user').setIssuedAt().sign(key);
      await expect(auth.verify(lasting), alg).rejects.toMatchObject({ status: 401, code: 'unauthorized', message: 'token has no exp claim; tokens must expire' });
    }
  });
});

/** Runs the auth middleware on a GET like an <audio src> makes: no header, a query token. */
async function playbackRequest(path: string, token: string, by: Auth = auth): Promise<{ principal?: unknown; error?: { status?: number; message?: string } }> {
  const req = { method: 'GET', headers: {}, query: { playback_token: token }, baseUrl: '/v1', path } as any;
  return new Promise((resolve) => {
    void by.middleware(req, {} as any, (error?: unknown) => resolve(error ? { error: error as { status?: number; message?: string } } : { principal: req.principal }));
  });
}

describe('tokens the API signs itself, with JWKS users and no AUTH_JWT_SECRET', () => {
  it('are accepted by every API replica, and after a restart (the key is shared through the database)', async () => {
    const env = await createTestEnv({ AUTH_JWT_SECRET: '', AUTH_JWKS_URL: jwksUrl });
    const replicas = [await createApiContext(env.config), await createApiContext(env.config)];
    try {
      const [a, b] = replicas as [ApiContext, ApiContext];
      const principal = { userId: 'jwks-user', role: 'user' as const };
      const streamToken = await a.auth.signStream(principal, '5m');
      const onStream = { eventStream: true };
      expect(await b.auth.verify(streamToken, onStream)).toEqual(principal);
      const path = '/audio/tracks/0b6b3f4e-6c1e-4c35-9b8e-3f2b7d7c0a11/audio';
      const playback = await b.auth.signPlayback(principal, `/v1${path}`, '5m');
      expect(await playbackRequest(path, playback, a.auth)).toEqual({ principal });
      await a.close();
      replicas.shift();
      const restarted = await createApiContext(env.config);
      replicas.push(restarted);
      expect(await restarted.auth.verify(streamToken, onStream)).toEqual(principal);
      // Auth alone, without the database, has a key of its own: the shared one is what helps.
      await expect(auth.verify(streamToken, onStream)).rejects.toMatchObject({ status: 401 });
    } finally {
      for (const replica of replicas) await replica.close();
      await env.cleanup();
    }
  });
});

describe('playback tokens with a JWKS URL', () => {
  it("accepts an identity provider's token that carries an OAuth scope", async () => {
    const scoped = await new SignJWT({ scope: 'openid profile' }).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('scoped-user').setExpirationTime('5m').sign(rsa.privateKey);
    expect(await auth.verify(scoped)).toEqual({ userId: 'scoped-user', role: 'user' });
    // Even a scope that reads like one of ours: "events" and "playback" mean something only in
    // the tokens the API signs itself.
    for (const scope of ['events', 'playback']) {
      const lookalike = await new SignJWT({ scope }).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('scoped-user').setExpirationTime('5m').sign(rsa.privateKey);
      expect(await auth.verify(lookalike), scope).toEqual({ userId: 'scoped-user', role: 'user' });
    }
  });

  it('opens the one audio path with a playback token the API signed, and refuses one the provider signed', async () => {
    const path = '/v1/audio/tracks/0b6b3f4e-6c1e-4c35-9b8e-3f2b7d7c0a11/audio';
    const ours = await auth.signPlayback({ userId: 'jwks-user', role: 'user' }, path, '5m');
    expect(await playbackRequest('/audio/tracks/0b6b3f4e-6c1e-4c35-9b8e-3f2b7d7c0a11/audio', ours)).toEqual({ principal: { userId: 'jwks-user', role: 'user' } });
    expect((await playbackRequest('/audio/tracks/1b6b3f4e-6c1e-4c35-9b8e-3f2b7d7c0a11/audio', ours)).error).toMatchObject({ status: 401, message: 'this playback token is for another audio file' });
    await expect(auth.verify(ours)).rejects.toMatchObject({ status: 401, message: 'a playback token is only good in the playback URL it came with' });
    // The provider's keys sign users' tokens, never playback URLs.
    const theirs = await new SignJWT({ scope: 'playback', path }).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('jwks-user').setExpirationTime('5m').sign(rsa.privateKey);
    expect((await playbackRequest('/audio/tracks/0b6b3f4e-6c1e-4c35-9b8e-3f2b7d7c0a11/audio', theirs)).error).toMatchObject({ status: 401 });
  });
});

describe('?access_token= with a JWKS URL', () => {
  it("opens an event stream with the API's stream token only, never with the provider's token", async () => {
    const path = '/audio/batches/0b6b3f4e-6c1e-4c35-9b8e-3f2b7d7c0a11/events';
    const inUrl = (token: string) =>
      new Promise<{ principal?: unknown; error?: { status?: number; message?: string } }>((resolve) => {
        const req = { method: 'GET', headers: {}, query: { access_token: token }, baseUrl: '/v1', path } as any;
        void auth.middleware(req, {} as any, (error?: unknown) => resolve(error ? { error: error as { status?: number; message?: string } } : { principal: req.principal }));
      });
    const ours = await auth.signStream({ userId: 'jwks-user', role: 'user' }, '5m');
    expect(await inUrl(ours)).toEqual({ principal: { userId: 'jwks-user', role: 'user' } });
    // A user's token, even one whose OAuth scope happens to be "events", stays out of URLs.
    for (const scope of [undefined, 'events']) {
      const theirs = await new SignJWT(scope ? { scope } : {}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('jwks-user').setExpirationTime('5m').sign(rsa.privateKey);
      expect((await inUrl(theirs)).error, String(scope)).toMatchObject({ status: 401 });
    }
  });
});

describe('WORKER_QUEUES', () => {
  it('defaults to every queue and refuses unknown names at start', () => {
    expect(selectQueues(undefined)).toContain('audio-mix');
    expect(selectQueues('audio-mix, audio-tts')).toEqual(['audio-mix', 'audio-tts']);
    expect(() => selectQueues('audio-mix,audio-mixx')).toThrow(/unknown queue\(s\): audio-mixx/);
  });

  it('reads queue names in any case, as the other settings that take one of a few words', () => {
    expect(selectQueues('Audio-Mix, AUDIO-TTS,audio-mix')).toEqual(['audio-mix', 'audio-tts']);
    expect(() => selectQueues('Audio-Mixx')).toThrow(/unknown queue\(s\): Audio-Mixx\. Known: audio-tts, /);
  });
});

describe('auth with a JWKS URL and the tokens meant for this service', () => {
  it('refuses a token of the same provider made for another audience or by another issuer', async () => {
    const strict = await createAuth(loadConfig({ NODE_ENV: 'production', AUTH_JWKS_URL: jwksUrl, AUTH_JWT_AUDIENCE: 'soundqueue, soundqueue-web', AUTH_JWT_ISSUER: 'https://idp.example/' }));
    const token = (claims: { aud?: string; iss?: string }) => {
      const jwt = new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('aud-user').setExpirationTime('5m');
      if (claims.aud) jwt.setAudience(claims.aud);
      if (claims.iss) jwt.setIssuer(claims.iss);
      return jwt.sign(rsa.privateKey);
    };
    expect(await strict.verify(await token({ aud: 'soundqueue-web', iss: 'https://idp.example/' }))).toEqual({ userId: 'aud-user', role: 'user' });
    // Before, all of these were accepted: a token the provider made for another app worked here.
    for (const claims of [{ aud: 'some-other-app', iss: 'https://idp.example/' }, { iss: 'https://idp.example/' }, { aud: 'soundqueue', iss: 'https://elsewhere.example/' }, { aud: 'soundqueue' }]) {
      await expect(strict.verify(await token(claims)), JSON.stringify(claims)).rejects.toMatchObject({ status: 401, code: 'unauthorized' });
    }
    // Our own short-lived tokens (HS256, no aud) still work alongside.
    const stream = await strict.signStream({ userId: 'aud-user', role: 'user' }, '60s');
    expect(await strict.verify(stream, { eventStream: true })).toEqual({ userId: 'aud-user', role: 'user' });
  });

  it('allows a few seconds of clock difference with the provider', async () => {
    const now = Math.floor(Date.now() / 1000);
    const early = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('clock').setNotBefore(now + 5).setExpirationTime(now + 300).sign(rsa.privateKey);
    expect(await auth.verify(early)).toEqual({ userId: 'clock', role: 'user' });
    const farAhead = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('clock').setNotBefore(now + 600).setExpirationTime(now + 900).sign(rsa.privateKey);
    await expect(auth.verify(farAhead)).rejects.toMatchObject({ status: 401 });
  });

  it('answers 503, not 401, while the provider\'s keys cannot be fetched', async () => {
    // A port nothing listens on: the key set was never fetched. A 401 would tell every client
    // to throw its (good) token away.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const down = await createAuth(loadConfig({ NODE_ENV: 'production', AUTH_JWKS_URL: `http://127.0.0.1:${port}/jwks.json` }));
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).setSubject('x').setExpirationTime('5m').sign(rsa.privateKey);
    await expect(down.verify(token)).rejects.toMatchObject({ status: 503, code: 'auth_unavailable' });
  });
});
