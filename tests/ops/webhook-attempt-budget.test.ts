import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JobsOptions } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { jobId, jobOptions, QUEUE, tuningFrom } from '@soundqueue/shared/queues';
import { reconcile } from '../../apps/worker/src/reconciler';
import { startTestWorker, type TestWorker } from '../helpers/app';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// A delivery has WEBHOOK_ATTEMPTS attempts, however often it is queued. The reconciler queues
// a pending delivery that has no job; a delivery whose last attempt could not record its
// outcome (the database refused at that moment) stayed pending, so once its failed job was
// removed it was queued again with a fresh job, and the receiver got every attempt again.
// Only the webhooks queue runs here (no scheduled reconciler): the test runs each pass itself.
let env: TestEnv;
let worker: TestWorker;
let receiver: Awaited<ReturnType<typeof startReceiver>>;

/** A receiver that answers every delivery with `status()`. */
async function startReceiver() {
  const received: IncomingMessage['headers'][] = [];
  let status = 500;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      received.push(req.headers);
      res.statusCode = status;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    received,
    answer: (code: number) => (status = code),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

beforeAll(async () => {
  env = await createTestEnv({ WORKER_QUEUES: 'webhooks', WEBHOOK_ATTEMPTS: '2', WEBHOOK_BACKOFF_MS: '10', WEBHOOK_ALLOW_PRIVATE: 'true', RECONCILE_GRACE_MS: '1' });
  worker = await startTestWorker(env.config);
  receiver = await startReceiver();
});
afterEach(async () => {
  await queryRows(env.databaseUrl, 'drop trigger if exists refuse_update on webhook_deliveries; drop function if exists refuse_update()');
  receiver.received.length = 0;
});
afterAll(async () => {
  await worker?.close();
  await receiver?.close();
  await env?.cleanup();
});

/** Records one delivery to the receiver and queues its job, as dispatching an event does. */
async function deliver(options: JobsOptions = {}): Promise<string> {
  const [endpoint] = await queryRows(env.databaseUrl, `insert into webhook_endpoints (user_id, url, events, secret) values ('user-a', $1, '["batch.completed"]', 'whsec_x') returning id`, [receiver.url]);
  const [delivery] = await queryRows(env.databaseUrl, `insert into webhook_deliveries (endpoint_id, event_id, event_type, payload) values ($1, 'evt_1', 'batch.completed', '{"id":"evt_1"}') returning id`, [endpoint.id]);
  await worker.ctx.queues.webhooks.add('deliver', { deliveryId: delivery.id }, { ...jobOptions(QUEUE.webhooks, tuningFrom(env.config)), jobId: jobId.webhook(delivery.id), ...options });
  return delivery.id as string;
}

/** The database refuses the updates of webhook_deliveries that match `when` (SQL on old/new). */
async function refuseUpdates(when: string): Promise<void> {
  await queryRows(
    env.databaseUrl,
    `create function refuse_update() returns trigger language plpgsql as $$ begin raise exception 'refused for the test'; end $$;
     create trigger refuse_update before update on webhook_deliveries for each row when (${when}) execute function refuse_update()`,
  );
}

/** Waits for the delivery's job to fail for good, then removes it (as retention does in time). */
async function removeFailedJob(deliveryId: string): Promise<void> {
  const queue = worker.ctx.queues.webhooks;
  await waitFor(async () => (await queue.getJobState(jobId.webhook(deliveryId))) === 'failed', { what: 'the delivery job to fail for good' });
  await queue.remove(jobId.webhook(deliveryId));
}

const row = async (id: string) =>
  (await queryRows<{ status: string; attempts: number; attempt_log: { attempt: number }[]; last_error: string | null }>(env.databaseUrl, 'select status, attempts, attempt_log, last_error from webhook_deliveries where id = $1', [id]))[0]!;

describe('a webhook delivery', () => {
  it('whose last attempt could not record its outcome is not sent again when queued again', async () => {
    // Only the last attempt's outcome (status failed) is refused.
    await refuseUpdates(`new.status = 'failed'`);
    const id = await deliver();
    await removeFailedJob(id);
    expect(receiver.received.map((h) => h['soundqueue-delivery-attempt'])).toEqual(['1', '2']);
    expect(await row(id)).toMatchObject({ status: 'pending' });
    await queryRows(env.databaseUrl, 'drop trigger refuse_update on webhook_deliveries');

    expect((await reconcile(worker.ctx)).webhooksRequeued).toEqual([id]);
    const settled = await waitFor(async () => {
      const r = await row(id);
      return r.status !== 'pending' ? r : null;
    }, { what: 'the delivery to settle' });
    expect(settled.status).toBe('failed');
    expect(settled.attempts).toBe(2);
    expect(settled.last_error).toMatch(/2 attempts/);
    // Two requests in all: the budget, not two per job.
    expect(receiver.received).toHaveLength(2);
    expect((await reconcile(worker.ctx)).webhooksRequeued).toEqual([]);
  });

  it('queued again continues from the attempts it made', async () => {
    // Its retry far off, so the test takes the job away before it runs.
    const id = await deliver({ backoff: { type: 'fixed', delay: 600_000 } });
    // One attempt made, then its job lost (Redis flushed, the key evicted).
    await waitFor(async () => (await row(id)).attempt_log.length === 1 || null, { what: 'the first attempt' });
    await worker.ctx.queues.webhooks.remove(jobId.webhook(id));
    await waitFor(async () => (await worker.ctx.queues.webhooks.getJobState(jobId.webhook(id))) === 'unknown' || null, { what: 'the job removed' });
    const sentBefore = receiver.received.length;
    expect(sentBefore).toBe(1);

    receiver.answer(200);
    try {
      expect((await reconcile(worker.ctx)).webhooksRequeued).toEqual([id]);
      await waitFor(async () => (await row(id)).status === 'delivered' || null, { what: 'the delivery delivered' });
    } finally {
      receiver.answer(500);
    }
    // The receiver saw attempt 2: the count went on.
    expect(receiver.received.map((h) => h['soundqueue-delivery-attempt'])).toEqual(['1', '2']);
    expect(await row(id)).toMatchObject({ status: 'delivered', attempts: 2 });
  });

  it('is not sent while its attempt cannot be counted, and is not lost for it', async () => {
    // Every update of the row is refused, for as long as the job has attempts.
    await refuseUpdates('true');
    const id = await deliver();
    // Its job fails for good: every one of the job's own attempts went on a refused count.
    await waitFor(async () => (await worker.ctx.queues.webhooks.getJobState(jobId.webhook(id))) === 'failed' || null, { what: 'the delivery job to fail for good' });
    // No attempt could be counted, so none was sent: the budget holds even then.
    expect(receiver.received).toHaveLength(0);
    expect(await row(id)).toMatchObject({ status: 'pending', attempts: 0 });
    await queryRows(env.databaseUrl, 'drop trigger refuse_update on webhook_deliveries');

    // Once the database takes updates again, the reconciler queues it, with all its attempts,
    // without waiting for job retention to remove the failed job (days, by default): a failed
    // job holds nothing for a delivery still pending.
    receiver.answer(200);
    try {
      expect((await reconcile(worker.ctx)).webhooksRequeued).toEqual([id]);
      await waitFor(async () => (await row(id)).status === 'delivered' || null, { what: 'the delivery delivered' });
    } finally {
      receiver.answer(500);
    }
    expect(receiver.received.map((h) => h['soundqueue-delivery-attempt'])).toEqual(['1']);
  });
});
