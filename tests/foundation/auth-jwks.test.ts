import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '@soundqueue/shared/config';
import { createAuth, type Auth } from '../../apps/api/src/auth';
import { selectQueues } from '../../apps/worker/src/workers';

let server: Server;
let auth: Auth;
let rsa: Awaited<ReturnType<typeof generateKeyPair>>;
let ec: Awaited<ReturnType<typeof generateKeyPair>>;

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
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  auth = await createAuth(loadConfig({ NODE_ENV: 'production', AUTH_JWKS_URL: url }));
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
  });
});

describe('WORKER_QUEUES', () => {
  it('defaults to every queue and refuses unknown names at start', () => {
    expect(selectQueues(undefined)).toContain('audio-mix');
    expect(selectQueues('audio-mix, audio-tts')).toEqual(['audio-mix', 'audio-tts']);
    expect(() => selectQueues('audio-mix,audio-mixx')).toThrow(/unknown queue\(s\): audio-mixx/);
  });
});
