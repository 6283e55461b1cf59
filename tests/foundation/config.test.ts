import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ConfigError, LOG_LEVELS, loadConfig, type Config } from '@soundqueue/shared/config';
import { createLogger } from '@soundqueue/shared/logger';

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
    expect(problems).toContain('PORT must be a whole number in decimal digits, not "eighty"');
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
    // Both said "must be a number" for 99999 and -1: the schema's one message stood for every
    // check without its own.
    for (const name of ['PORT', 'WORKER_METRICS_PORT']) {
      for (const bad of ['99999', '65536', '-1']) expect(problemsOf({ [name]: bad }), `${name}=${bad}`).toBe(`${name} must be 0-65535`);
      // -0 is Number's negative zero, which `>= 0` takes for 0: PORT=-0 was a random port.
      for (const bad of ['-0', '-000']) expect(problemsOf({ [name]: bad }), `${name}=${bad}`).toBe(`${name} must be a whole number in decimal digits, not "${bad}"`);
      expect(problemsOf({ [name]: '1.5' }), `${name}=1.5`).toBe(`${name} must be a whole number in decimal digits, not "1.5"`);
      expect(problemsOf({ [name]: 'eighty' }), `${name}=eighty`).toBe(`${name} must be a whole number in decimal digits, not "eighty"`);
      expect(loadConfig({ [name]: '9100' })[name as 'PORT']).toBe(9100);
    }
  });

  it('reads the PRICE_* settings with the rest, so a bad price is refused at start with the other problems', () => {
    // They were read by prices.ts when a provider module was first imported: a bad one threw on
    // its own (in a worker only), after loadConfig had passed, and was never listed with the rest.
    const defaults = loadConfig({});
    expect([defaults.PRICE_OPENAI_TTS_PER_1K_CHARS, defaults.PRICE_GEMINI_PER_1K_TOKENS, defaults.PRICE_REPLICATE_PER_SECOND]).toEqual([0.012, 0.0004, 0.0014]);
    expect(loadConfig({ PRICE_GEMINI_PER_1K_TOKENS: '0.0005' }).PRICE_GEMINI_PER_1K_TOKENS).toBe(0.0005);
    // A contract may make a provider free.
    expect(loadConfig({ PRICE_REPLICATE_PER_SECOND: '0' }).PRICE_REPLICATE_PER_SECOND).toBe(0);
    const problems = problemsOf({ PORT: 'eighty', PRICE_OPENAI_TTS_PER_1K_CHARS: 'twelve', PRICE_GEMINI_PER_1K_TOKENS: '-0.1' });
    expect(problems).toContain('PORT must be a whole number in decimal digits, not "eighty"');
    expect(problems).toContain('PRICE_OPENAI_TTS_PER_1K_CHARS must be a number in decimal digits (such as 0.012), not "twelve"');
    expect(problems).toContain('PRICE_GEMINI_PER_1K_TOKENS must be 0 or more');
    // -0 was taken for 0, as for a port.
    expect(problemsOf({ PRICE_REPLICATE_PER_SECOND: '-0' })).toBe('PRICE_REPLICATE_PER_SECOND must be a number in decimal digits (such as 0.012), not "-0"');
  });

  it('reads numbers in decimal digits only, naming the setting and the value it refuses', () => {
    // Number() also reads hexadecimal, binary, octal and exponents: JOB_ATTEMPTS=0x10 was 16
    // attempts and WEBHOOK_TIMEOUT_MS=1e3 one second, a value that reads as one thing and is another.
    const defaults = loadConfig({});
    const integers = [...schemaVariables.filter((name) => Number.isInteger(defaults[name as keyof Config])), 'WORKER_METRICS_PORT'];
    expect(integers).toEqual(expect.arrayContaining(['PORT', 'JOB_ATTEMPTS', 'SSE_HEARTBEAT_MS', 'BOOK_MAX_PAGES']));
    for (const name of integers) {
      for (const bad of ['0x10', '1e3', '0b11', '0o17', '1_000', '+5', '+0', '-0', '-00', '10.0', '1.5', 'Infinity', '12abc', 'eighty']) {
        expect(problemsOf({ [name]: bad }), `${name}=${bad}`).toBe(`${name} must be a whole number in decimal digits, not "${bad}"`);
      }
      expect(loadConfig({ [name]: ' 0042 ' })[name as keyof Config], name).toBe(42);
    }
    const decimals = ['PRICE_OPENAI_TTS_PER_1K_CHARS', 'PRICE_GEMINI_PER_1K_TOKENS', 'PRICE_REPLICATE_PER_SECOND', 'USER_MONTHLY_BUDGET_USD'];
    for (const name of decimals) {
      for (const bad of ['0x10', '1e3', '1e-3', 'Infinity', '0.5.1', '$5', '+1', '1,5', '12.', '-0', '-0.0', '-.0', '-00.000']) {
        expect(problemsOf({ [name]: bad }), `${name}=${bad}`).toBe(`${name} must be a number in decimal digits (such as 0.012), not "${bad}"`);
      }
      for (const [good, value] of [['0.25', 0.25], ['.5', 0.5], ['12', 12], [' 1.50 ', 1.5]] as const) {
        expect(loadConfig({ [name]: good })[name as keyof Config], `${name}=${good}`).toBe(value);
      }
    }
    // Digits too many for a number are refused too, not rounded.
    expect(problemsOf({ JOB_ATTEMPTS: '99999999999999999999' })).toBe('JOB_ATTEMPTS must be at most 9007199254740991');
  });

  it('reads true/false, yes/no and 1/0 in any case for every boolean setting, and names anything else', () => {
    const defaults = loadConfig({});
    // A Set: S3_FORCE_PATH_STYLE is also named in the Config type.
    const booleans = [...new Set(schemaVariables)].filter((name) => typeof defaults[name as keyof Config] === 'boolean');
    expect(booleans.sort()).toEqual(['ADMIN_READONLY', 'S3_FORCE_PATH_STYLE', 'WEBHOOK_ALLOW_PRIVATE']);
    for (const name of booleans) {
      for (const yes of ['true', 'TRUE', 'True', 'yes', 'YES', 'Yes', '1']) expect(loadConfig({ [name]: yes })[name as keyof Config], `${name}=${yes}`).toBe(true);
      for (const no of ['false', 'FALSE', 'False', 'no', 'NO', '0']) expect(loadConfig({ [name]: no })[name as keyof Config], `${name}=${no}`).toBe(false);
      for (const bad of ['maybe', 'y', 'n', 'on', 'off', 't', '2', 'truee']) {
        expect(problemsOf({ [name]: bad }), `${name}=${bad}`).toBe(`${name} must be true or false (or yes/no, 1/0; any case), not "${bad}"`);
      }
    }
  });

  it('reads every setting that takes one of a few words in any case, as it reads true/false', () => {
    const config = loadConfig({ LOG_LEVEL: 'INFO', NODE_ENV: 'Test', STORAGE_DRIVER: ' Local ', SPEECH_PROVIDER: 'OpenAI', OPENAI_API_KEY: 'sk-test', ANALYSIS_PROVIDER: 'LOCAL', SOUNDSCAPE_PROVIDER: 'Local' });
    expect(config).toMatchObject({ LOG_LEVEL: 'info', NODE_ENV: 'test', STORAGE_DRIVER: 'local', SPEECH_PROVIDER: 'openai', ANALYSIS_PROVIDER: 'local', SOUNDSCAPE_PROVIDER: 'local' });
    // An unknown word is still refused, with the words it may be.
    expect(problemsOf({ STORAGE_DRIVER: 'GCS' })).toBe('STORAGE_DRIVER must be local or s3, not "GCS"');
    expect(problemsOf({ NODE_ENV: 'prod' })).toBe('NODE_ENV must be development, production or test, not "prod"');
  });

  it("reads LOG_LEVEL with the rest: pino's levels or silent, a bad one named; a logger takes its level from the config", () => {
    // A bad level was refused with zod's own words ("LOG_LEVEL: Invalid option: expected one
    // of …"), and createLogger read process.env.LOG_LEVEL unless given a level.
    expect([...LOG_LEVELS].sort()).toEqual([...Object.keys(pino.levels.values), 'silent'].sort());
    for (const level of LOG_LEVELS) expect(loadConfig({ LOG_LEVEL: level }).LOG_LEVEL).toBe(level);
    expect(loadConfig({}).LOG_LEVEL).toBe('info');
    for (const bad of ['verbose', 'warning', '30']) {
      expect(problemsOf({ LOG_LEVEL: bad }), bad).toBe(`LOG_LEVEL must be fatal, error, warn, info, debug, trace or silent, not "${bad}"`);
    }
    expect(problemsOf({ LOG_LEVEL: 'verbose', PORT: 'eighty' })).toContain('PORT must be a whole number in decimal digits, not "eighty"');
    // vitest runs with LOG_LEVEL=error in process.env: the config's level is the one used.
    expect(process.env.LOG_LEVEL).toBe('error');
    expect(createLogger('config-test', loadConfig({ LOG_LEVEL: 'debug' })).level).toBe('debug');
    expect(createLogger('config-test', loadConfig({})).level).toBe('info');
  });

  it('refuses an ADMIN_USER that HTTP basic auth cannot carry', () => {
    // Basic credentials are "user:password", split at the first colon (RFC 7617): with a colon
    // in the user name no login could ever open Bull Board.
    expect(problemsOf({ ADMIN_USER: 'ops:team', ADMIN_PASSWORD: 'secret' })).toBe('ADMIN_USER must not contain a colon (HTTP basic auth splits user and password at the first one)');
    // The password may hold colons.
    expect(loadConfig({ ADMIN_USER: 'ops', ADMIN_PASSWORD: 'a:b:c' }).ADMIN_PASSWORD).toBe('a:b:c');
  });
});
