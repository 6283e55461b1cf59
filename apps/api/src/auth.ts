import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { createLocalJWKSet, createRemoteJWKSet, errors as joseErrors, jwtVerify, SignJWT, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { Config } from '@soundqueue/shared/config';
import { parseAudioPath } from './audio-paths';
import { isEventStreamPath } from './event-paths';
import { HttpError } from './http-errors';

export interface Principal {
  userId: string;
  role: 'user' | 'admin';
}

/** Where a token is presented: our scoped tokens are good only where they were made for. */
export interface TokenUse {
  /** The request is an event stream (GET …/events), where stream tokens are good. */
  eventStream?: boolean;
  /**
   * The token came in the URL (`?access_token=`): only a stream token is good there. A user's
   * own token or the static service token would sit in access logs, proxies' logs and browser
   * history, good for everything until it expires (the service token: for ever).
   */
  inUrl?: boolean;
}

export interface Auth {
  /** Verifies a token presented for `use` (by default any route but an event stream); throws HttpError 401 with the reason. */
  verify(token: string, use?: TokenUse): Promise<Principal>;
  /**
   * Signs a stream token (HS256, scope "events"): good only on event streams, as
   * `?access_token=` (EventSource cannot send headers) or as a bearer token, never on another
   * route, so a token that sits in URLs cannot call the rest of the API or renew itself.
   */
  signStream(principal: Principal, expiresIn: string): Promise<string>;
  /**
   * Signs a playback token: good only as `?playback_token=` on the one audio path it names
   * (GET and HEAD), never as a bearer token or on another route, so an <audio src> can carry
   * it for a whole listening session at little risk.
   */
  signPlayback(principal: Principal, path: string, expiresIn: string): Promise<string>;
  middleware: RequestHandler;
  /** Set in development when no auth was configured: a ready-to-use token for a demo user. */
  devToken: string | null;
}

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
    /** When the token the request came with expires (seconds since the epoch); unset for the service token. */
    tokenExpiresAt?: number;
  }
}

/**
 * The lifetime, in seconds, of a token minted for this request: `maxSeconds`, but never past
 * the expiry of the token the request came with, so a short-lived session cannot mint a
 * stream or playback token that outlives it (at least 1 s: a provider's token is accepted up
 * to the clock tolerance past its exp).
 */
export function mintedLifetime(tokenExpiresAt: number | undefined, maxSeconds: number): number {
  if (tokenExpiresAt === undefined) return maxSeconds;
  return Math.max(1, Math.min(maxSeconds, tokenExpiresAt - Math.floor(Date.now() / 1000)));
}

/** A verified token: who it is, and until when (seconds since the epoch; none for the service token). */
interface Verified {
  principal: Principal;
  expiresAt?: number;
}

const unauthorized = (message: string) => new HttpError(401, 'unauthorized', message);
const ACCESS_TOKEN_ONLY = '?access_token= takes a stream token from POST /v1/stream-tokens';

// What a key set answers about a token's key itself; anything else it throws means the key
// set could not be fetched (a network error, a timeout, a non-200 answer, a broken body).
const KEY_ERRORS = [joseErrors.JWKSNoMatchingKey, joseErrors.JWKSMultipleMatchingKeys, joseErrors.JOSENotSupported];

/**
 * The identity provider's keys from its JWKS URL, fetched when missing or older than ten
 * minutes. While the URL cannot be reached, the last key set fetched stays in use, so an
 * outage of the provider does not log every user out (a 401 tells clients to drop their
 * tokens); before any key set was fetched, or for a key it does not hold, the answer is 503.
 */
function remoteKeys(url: URL): JWTVerifyGetKey {
  const remote = createRemoteJWKSet(url, { timeoutDuration: 5_000 });
  const unavailable = () => new HttpError(503, 'auth_unavailable', "the identity provider's keys (AUTH_JWKS_URL) cannot be fetched; retry shortly");
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (error) {
      if (KEY_ERRORS.some((type) => error instanceof type)) throw error;
      const last = remote.jwks();
      if (!last) throw unavailable();
      try {
        return await createLocalJWKSet(last)(header, token);
      } catch (stale) {
        // A key the last set does not hold may be a new one the provider published since.
        throw stale instanceof joseErrors.JWKSNoMatchingKey ? unavailable() : stale;
      }
    }
  };
}

/**
 * JWT auth: HS256 with AUTH_JWT_SECRET, or RS256/ES256 keys from AUTH_JWKS_URL; every token
 * must carry exp. In development with neither set, a random secret and a demo user's token are
 * generated so `npm start` works at once; production refuses to start without one of them.
 */
export async function createAuth(config: Config, options: { sharedKey?: () => Promise<Uint8Array> } = {}): Promise<Auth> {
  const secret: Uint8Array | null = config.AUTH_JWT_SECRET ? new TextEncoder().encode(config.AUTH_JWT_SECRET) : null;
  const jwks: JWTVerifyGetKey | null = config.AUTH_JWKS_URL ? remoteKeys(new URL(config.AUTH_JWKS_URL)) : null;
  // The identity provider's tokens must be meant for this service when these are set: one
  // provider often serves many apps, and a token it made for another must not work here.
  const providerClaims = {
    ...(config.AUTH_JWT_AUDIENCE ? { audience: config.AUTH_JWT_AUDIENCE } : {}),
    ...(config.AUTH_JWT_ISSUER ? { issuer: config.AUTH_JWT_ISSUER } : {}),
  };
  // The provider's clock and this service's differ by a few seconds. (Tokens signed with our
  // own key come from our own clocks, and a stream token expired is expired.)
  const clockTolerance = 30;
  let devToken: string | null = null;
  if (!secret && !jwks && config.NODE_ENV === 'production') {
    throw new Error('Refusing to start: set AUTH_JWT_SECRET (HS256) or AUTH_JWKS_URL (RS256/ES256) in production.');
  }
  // Tokens we sign ourselves (dev token, EventSource tokens, playback URLs) need a symmetric
  // key even when users come with JWKS tokens: AUTH_JWT_SECRET, else the key every replica
  // shares through the database (signing-key.ts), else (auth on its own, in tests) a random one.
  const signingKey = secret ?? (options.sharedKey ? await options.sharedKey() : randomBytes(32));

  const sign = async (principal: Principal, expiresIn: string, claims: Record<string, string> = {}) =>
    new SignJWT({ ...claims, role: principal.role })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(principal.userId)
      .setIssuedAt()
      .setExpirationTime(expiresIn)
      .sign(signingKey);

  if (!config.AUTH_JWT_SECRET && !jwks) devToken = await sign({ userId: 'demo-user', role: 'user' }, '30d');

  // Compared as SHA-256 digests (as METRICS_TOKEN is): equal lengths whatever was sent, so the
  // comparison's timing says nothing about the token's length either.
  const sha256 = (value: string) => createHash('sha256').update(value).digest();
  const serviceToken = config.AUTH_SERVICE_TOKEN ? sha256(config.AUTH_SERVICE_TOKEN) : null;

  // `playbackPath` is set when the token came as ?playback_token= on that audio path: only
  // then is a playback token (scope "playback") good, and only for the path it was signed for.
  // A stream token (scope "events") is good only when `use.eventStream` says the request is one.
  // `provider`: an identity provider's token (JWKS). Its OAuth `scope` is its own business:
  // "events" and "playback" mean something only in the tokens we sign.
  const toPrincipal = (payload: JWTPayload, use: TokenUse, playbackPath?: string, provider = false): Verified => {
    // The sub is the user id every row is keyed by: PostgreSQL refuses NUL in text (every route
    // would answer 500), other control characters make ids that cannot be told apart in logs,
    // and lone surrogates would be stored as U+FFFD, merging different users into one.
    if (typeof payload.sub !== 'string' || payload.sub.length === 0 || payload.sub.length > 200 || /[\p{Cc}\p{Cs}]/u.test(payload.sub)) {
      throw unauthorized('token has no usable sub claim');
    }
    if (provider) {
      // Never in a URL: verify() checks such tokens against our own key only.
    } else if (playbackPath !== undefined) {
      if (payload.scope !== 'playback') throw unauthorized('playback_token must be a playback token from POST /v1/playback-urls');
      if (payload.path !== playbackPath) throw unauthorized('this playback token is for another audio file');
    } else if (payload.scope === 'playback') {
      // (Only our own value: an identity provider's tokens often carry an OAuth scope.)
      throw unauthorized('a playback token is only good in the playback URL it came with');
    } else if (payload.scope === 'events' && !use.eventStream) {
      throw unauthorized('a stream token is only good on an event stream (GET …/events)');
    } else if (use.inUrl && payload.scope !== 'events') {
      throw unauthorized(ACCESS_TOKEN_ONLY);
    }
    return { principal: { userId: payload.sub, role: payload.role === 'admin' ? 'admin' : 'user' }, expiresAt: payload.exp };
  };

  const verify = async (token: string, use: TokenUse, playbackPath?: string): Promise<Verified> => {
    // Tokens in URLs (playback and stream tokens) are ours alone (HS256 with our key), never
    // an identity provider's, nor the service token.
    const oursOnly = playbackPath !== undefined || use.inUrl === true;
    if (serviceToken && timingSafeEqual(sha256(token), serviceToken)) {
      if (!oursOnly) return { principal: { userId: 'service', role: 'admin' } };
      throw unauthorized(playbackPath === undefined ? ACCESS_TOKEN_ONLY : 'playback_token must be a playback token from POST /v1/playback-urls');
    }
    try {
      if (jwks && !oursOnly) {
        try {
          return toPrincipal((await jwtVerify(token, jwks, { algorithms: ['RS256', 'ES256'], requiredClaims: ['exp'], clockTolerance, ...providerClaims })).payload, use, playbackPath, true);
        } catch (error) {
          // Our own short-lived tokens are HS256 even in JWKS mode.
          if (!(error instanceof joseErrors.JOSEAlgNotAllowed)) throw error;
        }
      }
      return toPrincipal((await jwtVerify(token, signingKey, { algorithms: ['HS256'], requiredClaims: ['exp'] })).payload, use, playbackPath);
    } catch (error) {
      if (error instanceof HttpError) throw error;
      if (error instanceof joseErrors.JWTExpired) throw unauthorized('token expired');
      // A token without exp would be good for ever, however it leaked: every token must expire.
      if (error instanceof joseErrors.JWTClaimValidationFailed && error.claim === 'exp' && error.reason === 'missing') {
        throw unauthorized('token has no exp claim; tokens must expire');
      }
      if (error instanceof joseErrors.JWSSignatureVerificationFailed) throw unauthorized('token signature is invalid');
      if (error instanceof joseErrors.JOSEError) throw unauthorized(`token rejected: ${error.message}`);
      throw unauthorized('token is malformed');
    }
  };

  const middleware: RequestHandler = async (req, _res, next) => {
    try {
      const header = req.headers.authorization;
      // HEAD too: it is answered as the stream would start (events.routes.ts), by the same token.
      const eventStream = (req.method === 'GET' || req.method === 'HEAD') && isEventStreamPath(req.path);
      let token: string | undefined;
      if (header) {
        const match = /^Bearer\s+(\S+)$/i.exec(header);
        if (!match) throw unauthorized('Authorization header must be "Bearer <token>"');
        token = match[1];
      } else if (eventStream && typeof req.query.access_token === 'string') {
        // Browsers' EventSource cannot send headers: event streams accept a short-lived
        // signed token in the query string instead.
        ({ principal: req.principal, expiresAt: req.tokenExpiresAt } = await verify(req.query.access_token, { eventStream, inUrl: true }));
        return next();
      } else if ((req.method === 'GET' || req.method === 'HEAD') && typeof req.query.playback_token === 'string' && parseAudioPath(req.path)) {
        // <audio src> cannot send headers either: audio accepts a playback token signed for
        // exactly this path (POST /v1/playback-urls).
        ({ principal: req.principal, expiresAt: req.tokenExpiresAt } = await verify(req.query.playback_token, {}, req.baseUrl + req.path));
        return next();
      }
      if (!token) throw unauthorized('missing Authorization: Bearer <token>');
      ({ principal: req.principal, expiresAt: req.tokenExpiresAt } = await verify(token, { eventStream }));
      next();
    } catch (error) {
      next(error);
    }
  };

  const signPlayback = (principal: Principal, path: string, expiresIn: string) => sign(principal, expiresIn, { scope: 'playback', path });

  return {
    verify: async (token, use = {}) => (await verify(token, use)).principal,
    signStream: (principal, expiresIn) => sign(principal, expiresIn, { scope: 'events' }),
    signPlayback,
    middleware,
    devToken,
  };
}
