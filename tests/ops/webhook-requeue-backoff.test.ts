import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobId } from '@soundqueue/shared/queues';
import { reconcile } from '../../apps/worker/src/reconciler';
import { startTestWorker, type TestWorker } from '../helpers/app';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// A delivery the reconciler queues again (its job lost, or failed for good while the delivery
// still had attempts) goes on with its backoff where it was. Attempt n + 1 follows attempt n by
// WEBHOOK_BACKOFF_MS × 2^(n - 1), less up to a fifth (jitter). The new job used to start the
// schedule over: its first attempt went at once, and the next one a WEBHOOK_BACKOFF_MS later,
// however many attempts the delivery had made. The times are read from the jobs' delays, so
// nothing here waits for them.
const BACKOFF_MS = 60_000;
let env: TestEnv;
let worker: TestWorker;
const received: string[] = [];
let server: ReturnType<typeof createServer>;
let url: string;

beforeAll(async () => {
  env = await createTestEnv({ WORKER_QUEUES: 'webhooks', WEBHOOK_ATTEMPTS: '10', WEBHOOK_BACKOFF_MS: String(BACKOFF_MS), WEBHOOK_ALLOW_PRIVATE: 'true', RECONCILE_GRACE_MS: '1' });
  worker = await startTestWorker(env.config);
  // Every attempt fails.
  server = createServer((req, res) => {
    received.push(String(req.headers['soundqueue-delivery-attempt']));
    req.resume();
    req.on('end', () => {
      res.statusCode = 500;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
});
afterAll(async () => {
  await worker?.close();
  await new Promise((resolve) => server?.close(resolve));
  await env?.cleanup();
});

/** A pending delivery that made `attempts` attempts, the last `secondsAgo` ago, and has no job. */
async function recordDelivery(attempts: number, secondsAgo: number): Promise<string> {
  const [endpoint] = await queryRows(env.databaseUrl, `insert into webhook_endpoints (user_id, url, events, secret) values ('user-a', $1, '["batch.completed"]', 'whsec_x') returning id`, [url]);
  const [delivery] = await queryRows(
    env.databaseUrl,
    `insert into webhook_deliveries (endpoint_id, event_id, event_type, payload, attempts, updated_at)
     values ($1, 'evt_1', 'batch.completed', '{"id":"evt_1"}', $2, now() - $3 * interval '1 second') returning id`,
    [endpoint.id, attempts, secondsAgo],
  );
  return delivery.id as string;
}

const job = async (deliveryId: string) => (await worker.ctx.queues.webhooks.getJob(jobId.webhook(deliveryId)))!;

describe('a webhook delivery queued again', () => {
  it('waits for its next attempt what the schedule says, counted from its last one', async () => {
    const startedAt = Date.now();
    const id = await recordDelivery(3, 20);
    expect((await reconcile(worker.ctx)).webhooksRequeued).toEqual([id]);
    const tookMs = Date.now() - startedAt;

    // Attempt 4 follows attempt 3 by 4 × WEBHOOK_BACKOFF_MS (jitter: down to 0.8 of it),
    // 20 s of which (and the moments this test took) have gone by.
    const queued = await job(id);
    expect(await queued.getState()).toBe('delayed');
    expect(queued.delay).toBeLessThanOrEqual(4 * BACKOFF_MS - 20_000);
    expect(queued.delay).toBeGreaterThanOrEqual(0.8 * 4 * BACKOFF_MS - 20_000 - tookMs - 1);
    // The attempts the delivery has left.
    expect(queued.opts.attempts).toBe(7);
    expect(received).toEqual([]);
  });

  it('goes at once when that wait has gone by, and its next wait doubles on from there', async () => {
    const id = await recordDelivery(3, 3600);
    expect((await reconcile(worker.ctx)).webhooksRequeued).toEqual([id]);

    // Attempt 4 fails, and the job waits for attempt 5 what follows attempt 4: 8 × WEBHOOK_BACKOFF_MS.
    const retrying = await waitFor(async () => {
      const current = await job(id);
      return current.attemptsMade === 1 && (await current.getState()) === 'delayed' ? current : null;
    }, { what: 'attempt 4 made and the job waiting for the next' });
    expect(received).toEqual(['4']);
    expect(retrying.delay).toBeLessThanOrEqual(8 * BACKOFF_MS);
    expect(retrying.delay).toBeGreaterThanOrEqual(0.8 * 8 * BACKOFF_MS - 1);
    const [row] = await queryRows(env.databaseUrl, 'select status, attempts from webhook_deliveries where id = $1', [id]);
    expect(row).toMatchObject({ status: 'pending', attempts: 4 });
  });

  it('with no attempts left is failed at once, not after a wait', async () => {
    received.length = 0;
    // The last attempt's outcome was not recorded: the job only has the delivery to fail.
    const id = await recordDelivery(10, 1);
    expect((await reconcile(worker.ctx)).webhooksRequeued).toEqual([id]);
    await waitFor(async () => (await queryRows(env.databaseUrl, `select 1 from webhook_deliveries where id = $1 and status = 'failed'`, [id])).length === 1 || null, {
      what: 'the delivery failed',
    });
    expect(received).toEqual([]);
  });
});
