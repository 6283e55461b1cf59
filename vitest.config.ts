import { defineConfig } from 'vitest/config';

// Tests talk to the real Redis, PostgreSQL and ffmpeg of this machine. Each file owns its
// database and queue prefix (tests/helpers), so files may run side by side; two at a time
// because the machine has two cores and ffmpeg is CPU-bound.
export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 300_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    env: { LOG_LEVEL: 'error', NODE_ENV: 'test' },
  },
});
