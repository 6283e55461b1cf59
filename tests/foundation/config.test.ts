import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, type Config } from '@soundqueue/shared/config';

// Every variable the schema reads, from its source, so a setting added later is held to the
// same rules without a test to remember.
const schemaVariables = [...readFileSync(new URL('../../packages/shared/src/config.ts', import.meta.url), 'utf8').matchAll(/^ {2}([A-Z][A-Z0-9_]+):/gm)].map(
  (m) => m[1]!,
);

const problemsOf = (env: Record<string, string>): string => {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems.join('\n');
    throw error;
  }
  return '';
};

describe('config', () => {
  it('has defaults that work on this machine', () => {
    const config = loadConfig({});
    expect(config.DATABASE_URL).toBe('postgres://postgres@127.0.0.1:5432/soundqueue');
    expect(config.REDIS_URL).toBe('redis://127.0.0.1:6379');
    expect(config.PORT).toBe(3000);
    expect(config.STORAGE_DIR).toBe('./data');
    expect(config.speechProvider).toBe('local');
    expect(config.analysisProvider).toBe('local');
    expect(config.soundscapeProvider).toBe('local');
  });

  it('picks a cloud provider when its key is set', () => {
    const config = loadConfig({ OPENAI_API_KEY: 'sk-x', GEMINI_API_KEY: 'g', REPLICATE_API_TOKEN: 'r' });
    expect([config.speechProvider, config.analysisProvider, config.soundscapeProvider]).toEqual(['openai', 'gemini', 'replicate']);
    expect(loadConfig({ OPENAI_API_KEY: 'sk-x', SPEECH_PROVIDER: 'local' }).speechProvider).toBe('local');
  });

  it('lists every bad value with a clear message', () => {
    let error: unknown;
    try {
      loadConfig({ REDIS_URL: 'http://nope', PORT: 'eighty', DATABASE_URL: 'mysql://x', WORKER_CONCURRENCY_AUDIO_MIX: '0' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    expect(problems).toContain('REDIS_URL must be a redis:// or rediss:// URL');
    expect(problems).toContain('PORT must be a number');
    expect(problems).toContain('DATABASE_URL must be a postgres:// or postgresql:// URL');
    expect(problems).toContain('WORKER_CONCURRENCY_AUDIO_MIX must be greater than 0');
  });

  it('refuses a cloud provider without its key', () => {
    expect(() => loadConfig({ SPEECH_PROVIDER: 'openai' })).toThrow(/SPEECH_PROVIDER=openai needs OPENAI_API_KEY/);
    expect(() => loadConfig({ ADMIN_USER: 'ops' })).toThrow(/ADMIN_USER and ADMIN_PASSWORD must be set together/);
  });

  it('treats an empty or blank value as unset, so every variable keeps its default', () => {
    expect(schemaVariables.length).toBeGreaterThan(60);
    const defaults = loadConfig({});
    for (const name of schemaVariables) {
      expect(loadConfig({ [name]: '' }), name).toEqual(defaults);
      expect(loadConfig({ [name]: ' \t' }), name).toEqual(defaults);
    }
    // The two that did harm: port 0 is a random port, and a metrics server started on it.
    expect(loadConfig({ PORT: '' }).PORT).toBe(3000);
    expect(loadConfig({ WORKER_METRICS_PORT: '' }).WORKER_METRICS_PORT).toBeUndefined();
  });

  it('caps every millisecond setting at the largest delay a Node timer takes', () => {
    const msVariables = schemaVariables.filter((name) => name.endsWith('_MS'));
    expect(msVariables).toEqual(expect.arrayContaining(['SSE_HEARTBEAT_MS', 'JOB_BACKOFF_MS', 'REPLICATE_POLL_INTERVAL_MS']));
    for (const name of msVariables) {
      expect(loadConfig({ [name]: '2147483647' })[name as keyof Config], name).toBe(2_147_483_647);
      expect(problemsOf({ [name]: '3000000000' }), name).toContain(`${name} must be at most 2147483647`);
    }
    // A rate limit's duration is a delay too: 596 h fits, 597 h does not.
    expect(loadConfig({ TTS_RATE_LIMIT: '1/596h' }).TTS_RATE_LIMIT).toEqual({ max: 1, duration: 596 * 3_600_000 });
    expect(problemsOf({ TTS_RATE_LIMIT: '1/597h' })).toContain("TTS_RATE_LIMIT's duration must be at most 2147483647 ms");
  });

  it('accepts only http and https for the URLs it fetches or shows as links', () => {
    const urlVariables = schemaVariables.filter((name) => /_URL$|_ENDPOINT$/.test(name) && !['DATABASE_URL', 'REDIS_URL'].includes(name));
    expect(urlVariables.sort()).toEqual(['AUTH_JWKS_URL', 'GEMINI_BASE_URL', 'OPENAI_BASE_URL', 'PUBLIC_URL', 'REPLICATE_BASE_URL', 'S3_ENDPOINT']);
    for (const name of urlVariables) {
      for (const bad of ['ftp://keys.example.com/jwks.json', 'javascript:alert(1)', 'file:///etc/passwd', 'not a url']) {
        expect(problemsOf({ [name]: bad }), `${name}=${bad}`).toContain(`${name} must be an http(s) URL`);
      }
      expect(problemsOf({ [name]: 'https://example.com/x' }), name).toBe('');
      expect(problemsOf({ [name]: 'http://127.0.0.1:9000' }), name).toBe('');
    }
  });

  it('wants a 32-character AUTH_JWT_SECRET, AUTH_SERVICE_TOKEN and METRICS_TOKEN in production, saying how to make one', () => {
    const weak = problemsOf({ NODE_ENV: 'production', AUTH_JWT_SECRET: 'x', AUTH_SERVICE_TOKEN: 'y'.repeat(31), METRICS_TOKEN: 'z'.repeat(16) });
    expect(weak).toContain('AUTH_JWT_SECRET must be at least 32 characters in production; make one with: openssl rand -hex 32');
    expect(weak).toContain('AUTH_SERVICE_TOKEN must be at least 32 characters in production; make one with: openssl rand -hex 32');
    expect(weak).toContain('METRICS_TOKEN must be at least 32 characters in production; make one with: openssl rand -hex 32');
    expect(problemsOf({ NODE_ENV: 'production', AUTH_JWT_SECRET: 'x'.repeat(32), AUTH_SERVICE_TOKEN: 'y'.repeat(64), METRICS_TOKEN: 'z'.repeat(32) })).toBe('');
    // Unset stays allowed (JWKS users, no service token, open metrics), and development keeps short secrets.
    expect(problemsOf({ NODE_ENV: 'production', AUTH_JWKS_URL: 'https://auth.example.com/jwks.json' })).toBe('');
    expect(problemsOf({ NODE_ENV: 'development', AUTH_JWT_SECRET: 'x', AUTH_SERVICE_TOKEN: 'y', METRICS_TOKEN: 'z' })).toBe('');
  });

  it('refuses a METRICS_TOKEN no Authorization header could carry', () => {
    // A bearer token is one word (RFC 6750): one with a space could never match.
    for (const bad of ['two words', ' padded-token', 'tab\there']) expect(problemsOf({ METRICS_TOKEN: bad }), bad).toContain('METRICS_TOKEN must not contain spaces');
    expect(loadConfig({ METRICS_TOKEN: 'one-word_token.~+/=' }).METRICS_TOKEN).toBe('one-word_token.~+/=');
  });

  it('says what is wrong with a port that is a number but no port', () => {
    // Both said "must be a number" for 99999, -1 and 1.5: the schema's one message stood for
    // every check without its own.
    for (const name of ['PORT', 'WORKER_METRICS_PORT']) {
      for (const bad of ['99999', '65536', '-1']) expect(problemsOf({ [name]: bad }), `${name}=${bad}`).toBe(`${name} must be 0-65535`);
      expect(problemsOf({ [name]: '1.5' }), `${name}=1.5`).toBe(`${name} must be a whole number`);
      expect(problemsOf({ [name]: 'eighty' }), `${name}=eighty`).toBe(`${name} must be a number`);
      expect(loadConfig({ [name]: '9100' })[name as 'PORT']).toBe(9100);
    }
  });

  it('refuses an ADMIN_USER that HTTP basic auth cannot carry', () => {
    // Basic credentials are "user:password", split at the first colon (RFC 7617): with a colon
    // in the user name no login could ever open Bull Board.
    expect(problemsOf({ ADMIN_USER: 'ops:team', ADMIN_PASSWORD: 'secret' })).toBe('ADMIN_USER must not contain a colon (HTTP basic auth splits user and password at the first one)');
    // The password may hold colons.
    expect(loadConfig({ ADMIN_USER: 'ops', ADMIN_PASSWORD: 'a:b:c' }).ADMIN_PASSWORD).toBe('a:b:c');
  });
});
