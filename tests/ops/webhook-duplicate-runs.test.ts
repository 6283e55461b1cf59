import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { jobId, jobOptions, QUEUE, tuningFrom } from '@soundqueue/shared/queues';
import { startTestWorker, type TestWorker } from '../helpers/app';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// Two runs of one delivery at once: a stalled job run again while the first run still sends,
// or a job queued again beside a live one. Each counts its own attempt, and the outcome of the
// one that answers last used to overwrite the row whatever the other had recorded: an earlier
// attempt's late 500 turned a delivered delivery back into pending (and its job sent it again)
// or a failed one back into pending, after its final attempt. Here the receiver holds the
// first run's request until the second run has ended the delivery. WEBHOOK_BACKOFF_MS is
// long: a job that retries shows as delayed and never runs during the test.
let env: TestEnv;
let worker: TestWorker;
let receiver: Awaited<ReturnType<typeof startReceiver>>;

/** A receiver that answers each attempt (its Soundqueue-Delivery-Attempt) as `answer` says. */
async function startReceiver() {
  const received: string[] = [];
  let answer: (attempt: string) => number | Promise<number> = () => 500;
  const server = createServer((req, res) => {
    const attempt = String(req.headers['soundqueue-delivery-attempt']);
    received.push(attempt);
    req.resume();
    req.on('end', () => {
      void Promise.resolve(answer(attempt)).then((code) => {
        res.statusCode = code;
        res.end();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    received,
    answerWith: (how: typeof answer) => (answer = how),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** An answer the test gives later. */
function heldAnswer() {
  let release!: (code: number) => void;
  const answer = new Promise<number>((resolve) => (release = resolve));
  return { answer, release };
}

beforeAll(async () => {
  env = await createTestEnv({ WORKER_QUEUES: 'webhooks', WEBHOOK_ATTEMPTS: '3', WEBHOOK_BACKOFF_MS: '600000', WEBHOOK_TIMEOUT_MS: '60000', WEBHOOK_ALLOW_PRIVATE: 'true' });
  worker = await startTestWorker(env.config);
  receiver = await startReceiver();
});
afterEach(() => {
  receiver.received.length = 0;
});
afterAll(async () => {
  await worker?.close();
  await receiver?.close();
  await env?.cleanup();
});

/** Records a delivery that has made `attempts` attempts already, and queues its job. */
async function deliver(attempts: number): Promise<string> {
  const [endpoint] = await queryRows(env.databaseUrl, `insert into webhook_endpoints (user_id, url, events, secret) values ('user-a', $1, '["batch.completed"]', 'whsec_x') returning id`, [receiver.url]);
  const [delivery] = await queryRows(
    env.databaseUrl,
    `insert into webhook_deliveries (endpoint_id, event_id, event_type, payload, attempts) values ($1, 'evt_1', 'batch.completed', '{"id":"evt_1"}', $2) returning id`,
    [endpoint.id, attempts],
  );
  await queue().add('deliver', { deliveryId: delivery.id }, { ...jobOptions(QUEUE.webhooks, tuningFrom(env.config)), jobId: jobId.webhook(delivery.id) });
  return delivery.id as string;
}

/** A second run of the delivery beside its live job. */
async function runAgain(deliveryId: string): Promise<void> {
  await queue().add('deliver', { deliveryId }, { ...jobOptions(QUEUE.webhooks, tuningFrom(env.config)), jobId: `${jobId.webhook(deliveryId)}.again` });
}

const queue = () => worker.ctx.queues.webhooks;

/** The delivery's job once it has ended its run: completed, failed, or delayed for a retry. */
async function settledJob(deliveryId: string) {
  return waitFor(async () => {
    const job = await queue().getJob(jobId.webhook(deliveryId));
    const state = await job?.getState();
    return state === 'completed' || state === 'failed' || state === 'delayed' ? { job: job!, state } : null;
  }, { what: "the delivery's first job to end its run" });
}

const row = async (id: string) =>
  (
    await queryRows<{ status: string; attempts: number; attempt_log: { attempt: number; status_code: number | null; latency_ms: number }[]; last_status_code: number | null; last_latency_ms: number | null; last_error: string | null }>(
      env.databaseUrl,
      'select status, attempts, attempt_log, last_status_code, last_latency_ms, last_error from webhook_deliveries where id = $1',
      [id],
    )
  )[0]!;

const rowWith = (id: string, status: string) => waitFor(async () => ((await row(id)).status === status ? true : null), { what: `the delivery ${status}` });

describe('a webhook delivery run twice at once', () => {
  it('stays delivered when an earlier attempt fails after it', async () => {
    const first = heldAnswer();
    receiver.answerWith((attempt) => (attempt === '1' ? first.answer : 200));
    const id = await deliver(0);
    await waitFor(() => receiver.received.length === 1 || null, { what: 'attempt 1 under way' });
    await runAgain(id);
    await rowWith(id, 'delivered');

    first.release(500);
    const { job, state } = await settledJob(id);
    // The first run's 500 changed nothing, and its job does not retry.
    expect(await row(id)).toMatchObject({ status: 'delivered', attempts: 2, last_status_code: 200, last_error: null, attempt_log: [expect.objectContaining({ attempt: 2 })] });
    expect(state).toBe('completed');
    expect(job.returnvalue).toEqual({ skipped: 'attempt 1 answered 500, not recorded: another run ended the delivery delivered' });
    expect(receiver.received).toEqual(['1', '2']);
  });

  it('stays failed when an earlier attempt fails after the last one', async () => {
    const second = heldAnswer();
    receiver.answerWith((attempt) => (attempt === '2' ? second.answer : 500));
    // Attempt 1 was made before; attempt 3 is the last.
    const id = await deliver(1);
    await waitFor(() => receiver.received.length === 1 || null, { what: 'attempt 2 under way' });
    await runAgain(id);
    await rowWith(id, 'failed');

    second.release(500);
    const { state } = await settledJob(id);
    // No attempt logged after the last, and no retry of a delivery that has ended.
    expect(await row(id)).toMatchObject({ status: 'failed', attempts: 3, last_status_code: 500, attempt_log: [expect.objectContaining({ attempt: 3 })] });
    expect(state).toBe('completed');
    expect(receiver.received).toEqual(['2', '3']);
  });

  /** Attempt 1 held by the receiver while a second run's attempt 2 answers 502 and is recorded first. */
  async function laterAttemptRecordedFirst() {
    const first = heldAnswer();
    receiver.answerWith((attempt) => (attempt === '1' ? first.answer : 502));
    const id = await deliver(0);
    await waitFor(() => receiver.received.length === 1 || null, { what: 'attempt 1 under way' });
    await runAgain(id);
    // Attempt 2 (not the last of 3) answered 502: recorded, the delivery still pending.
    await waitFor(async () => ((await row(id)).attempt_log.length === 1 ? true : null), { what: 'attempt 2 recorded' });
    expect(await row(id)).toMatchObject({ status: 'pending', attempts: 2, last_status_code: 502 });
    return { id, first };
  }

  it('keeps the newest attempt in last_* and the log in attempt order when an earlier attempt records after it', async () => {
    const { id, first } = await laterAttemptRecordedFirst();

    first.release(500);
    const { state } = await settledJob(id);
    expect(state).toBe('delayed'); // attempt 1's 500 is recorded, and its job retries as before
    const after = await row(id);
    // Before: last_status_code 500 and last_latency_ms of attempt 1, the log [2, 1].
    expect(after).toMatchObject({ status: 'pending', attempts: 2, last_status_code: 502, last_error: 'endpoint answered 502' });
    expect(after.attempt_log.map((a) => [a.attempt, a.status_code])).toEqual([
      [1, 500],
      [2, 502],
    ]);
    expect(after.last_latency_ms).toBe(after.attempt_log[1]!.latency_ms);
    expect(receiver.received).toEqual(['1', '2']);
  });

  it('describes a late success in last_* when an earlier attempt delivers it after a later one failed', async () => {
    const { id, first } = await laterAttemptRecordedFirst();

    first.release(200);
    await rowWith(id, 'delivered');
    const after = await row(id);
    // Before: delivered, with last_* still showing attempt 2's 502.
    expect(after).toMatchObject({ status: 'delivered', last_status_code: 200, last_error: null });
    expect(after.attempt_log.map((a) => [a.attempt, a.status_code])).toEqual([
      [1, 200],
      [2, 502],
    ]);
  });

  it('records its last attempt when a second run failed it for want of that outcome', async () => {
    const last = heldAnswer();
    receiver.answerWith(() => last.answer);
    // Attempts 1 and 2 were made before; attempt 3, the last, is under way when the second run
    // finds every attempt counted and fails the delivery (the outcome of the last one unknown).
    const id = await deliver(2);
    await waitFor(() => receiver.received.length === 1 || null, { what: 'attempt 3 under way' });
    await runAgain(id);
    await rowWith(id, 'failed');
    expect((await row(id)).last_error).toMatch(/outcome of the last one was not recorded/);

    // The real outcome replaces the guess.
    last.release(200);
    const { job, state } = await settledJob(id);
    expect(await row(id)).toMatchObject({ status: 'delivered', attempts: 3, last_status_code: 200, last_error: null, attempt_log: [expect.objectContaining({ attempt: 3 })] });
    expect(state).toBe('completed');
    expect(job.returnvalue).toEqual({ status: 200 });
    expect(receiver.received).toEqual(['3']);
  });
});
