import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiContext } from '@soundqueue/api';
import { createTestEnv, type TestEnv } from '../helpers/services';

// An API closed while its Redis connections are still connecting (a replica stopped right
// after it started, a test's short-lived API): the flows' connection, which keeps no offline
// queue, refuses its INFO ready check once closed, so its FlowProducer's start fails. BullMQ
// reports that on an 'error' event it no longer listens for once the producer is closed, and
// an 'error' event nobody listens for throws: an unhandled rejection, which ends a Node
// process. The context now closes the connections first and waits for those starts to settle.
let env: TestEnv;

beforeAll(async () => {
  env = await createTestEnv();
});
afterAll(async () => {
  await env?.cleanup();
});

describe('an API closed while its Redis connections are still connecting', () => {
  it('leaves no unhandled rejection behind', async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      for (let i = 0; i < 20; i++) {
        const ctx = await createApiContext(env.config);
        // Closed at once, or after one turn of the event loop (the connection half way).
        if (i % 2 === 1) await new Promise((resolve) => setImmediate(resolve));
        await ctx.close();
      }
      // What the closed connections still had to settle settles within a few turns.
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('unhandledRejection', onRejection);
    }
    expect(rejections.map((r) => (r as Error).message)).toEqual([]);
  });
});
