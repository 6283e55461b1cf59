import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobId } from '@soundqueue/shared/queues';
import { reconcile } from '../../apps/worker/src/reconciler';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// A webhook whose event was dispatched while Redis refused jobs: the delivery row is written
// (PostgreSQL), its job is not. The transition that raised the event has committed and
// happens once, so nothing dispatches it again: before, the delivery stayed "pending" with
// 0 attempts for ever. The reconciler now queues deliveries that have no job. Redis is this
// file's own, to stop it.

let redis: OwnRedis;
let env: TestEnv;
let api: TestApi;
let worker: TestWorker | undefined;

beforeAll(async () => {
  redis = await startOwnRedis();
  env = await createTestEnv({ REDIS_URL: redis.url, WEBHOOK_ALLOW_PRIVATE: 'true', RECONCILE_GRACE_MS: '1' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
  await redis?.stop();
});

describe('webhook deliveries recorded while Redis was down', () => {
  it('are queued by the reconciler and delivered, once', async () => {
    const received: string[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        received.push(body);
        res.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
      const endpoints = await Promise.all(
        [1, 2].map(async () => readJson(await api.request('/v1/webhooks', { method: 'POST', json: { url, events: ['batch.completed'] } }))),
      );
      const batch = await createBatch(api, { visionId: 'outbox', sections: sampleSections(1, 'Outbox'), variants: ['voice_only'], voice: 'alloy' });
      expect(batch.status).toBe(201);

      await redis.stop();
      // The notifier logs the failure (the committed change cannot be undone) and returns.
      await api.ctx.publish([{ subject: { kind: 'batch', id: batch.body.id }, type: 'batch.completed', data: { status: 'completed' }, terminal: true }]);
      const recorded = await queryRows<{ id: string; status: string; attempts: number }>(env.databaseUrl, 'select id, status, attempts from webhook_deliveries');
      // One failed job did not cost the other endpoint its delivery row.
      expect(recorded).toHaveLength(endpoints.length);
      expect(recorded.every((d) => d.status === 'pending' && d.attempts === 0)).toBe(true);
      await redis.start();
      // The API's Redis client may still send a refused job once Redis is back (its offline
      // queue replays in order, before any later command): let it, then take any such job out
      // again, so both deliveries are in the state this test is about, recorded without a job.
      // A replayed add is an EVALSHA the restarted (empty) Redis answers NOSCRIPT; ioredis then
      // sends the script itself, after that answer: behind a first round trip queued after the
      // replay, but ahead of a second. Three, to be sure, then the jobs are taken out.
      const queue = api.ctx.queues.webhooks;
      for (let i = 0; i < 3; i++) await queue.getJobCounts();
      for (const { id } of recorded) await queue.remove(jobId.webhook(id));
      for (const { id } of recorded) expect(await queue.getJobState(jobId.webhook(id))).toBe('unknown');

      worker = await startTestWorker(env.config);
      // Pass by pass: this test's own, and the worker's scheduled ones (it runs the
      // maintenance queue, and may get there first). A pass that could not queue one (Redis
      // just back, the machine loaded) lists it in its errors, and the next pass tries again.
      const requeued = new Set<string>();
      const errors: unknown[] = [];
      await waitFor(
        async () => {
          const report = await reconcile(worker!.ctx);
          const scheduled = (await worker!.ctx.queues.maintenance.getCompleted()).map((job) => job.returnvalue as typeof report | undefined);
          for (const pass of [report, ...scheduled]) {
            for (const id of pass?.webhooksRequeued ?? []) requeued.add(id);
            errors.push(...(pass?.errors ?? []));
          }
          return requeued.size >= recorded.length || null;
        },
        { what: 'both deliveries queued by the reconciler', timeoutMs: 30_000 },
      ).catch((error: Error) => {
        throw new Error(`${error.message}; the passes' errors: ${JSON.stringify(errors)}`);
      });
      expect([...requeued].sort()).toEqual(recorded.map((d) => d.id).sort());
      await waitFor(async () => (await queryRows(env.databaseUrl, `select 1 from webhook_deliveries where status = 'delivered'`)).length === endpoints.length || null, {
        what: 'both deliveries delivered',
      });
      // A second pass finds nothing to queue, and nothing is delivered twice.
      expect((await reconcile(worker.ctx)).webhooksRequeued).toEqual([]);
      expect(received).toHaveLength(endpoints.length);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
