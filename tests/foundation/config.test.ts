import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '@soundqueue/shared/config';

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
});
