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
    // Tests open and close many API and worker contexts in one process. A command still in
    // flight on an ioredis client that the test just closed rejects with exactly this
    // message; that teardown artifact is not a failure of the code under test. Every other
    // unhandled error still fails the run.
    onUnhandledError(error) {
      const closedClient = error.message === 'Connection is closed.' && /ioredis/.test(error.stack ?? '');
      return closedClient ? false : undefined;
    },
  },
});
