import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { createTestEnv, lockWaits, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// A terminal change records its webhook deliveries in its own transaction: it reads the
// user's subscribed endpoints, then inserts one delivery per endpoint. An endpoint deleted
// (DELETE /v1/webhooks/:id) between that read and that insert made the insert break the
// deliveries' foreign key, and the whole change was rolled back: a cancel answered 500, a
// track's failure or a batch's end failed its job's attempt. Here a transaction holding a
// lock on webhook_deliveries keeps a cancel between its read and its insert while the
// endpoint is deleted; both must succeed, and no delivery is left for the deleted endpoint.
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  // No workers: the batch stays pending, so a cancel ends it at once.
  env = await createTestEnv({ WEBHOOK_ALLOW_PRIVATE: 'true' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

describe('an endpoint deleted while a change records its deliveries', () => {
  it('neither the change nor the delete fails, and the deleted endpoint gets no delivery', async () => {
    const hook = await api.request('/v1/webhooks', { method: 'POST', json: { url: 'http://127.0.0.1:9/hook', events: ['batch.cancelled'] } });
    expect(hook.status).toBe(201);
    const endpointId = (await readJson(hook)).id as string;
    const created = await createBatch(api, { visionId: 'deleted-endpoint', sections: sampleSections(2), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;

    const holder = new pg.Client({ connectionString: env.databaseUrl });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('lock table webhook_deliveries in share mode');
      // The cancel reads the endpoint, then waits to insert its delivery.
      const cancel = api.request(`/v1/audio/batches/${batchId}/cancel`, { method: 'POST' });
      await waitFor(async () => (await lockWaits(env.databaseUrl)) >= 1, { what: 'the cancel to wait to insert its delivery' });
      // The endpoint is deleted meanwhile.
      const deleted = api.request(`/v1/webhooks/${endpointId}`, { method: 'DELETE' });
      await waitFor(async () => (await lockWaits(env.databaseUrl)) >= 2, { what: 'the delete to wait too' });
      await holder.query('commit');
      const cancelled = await cancel;
      expect(cancelled.status, await cancelled.clone().text()).toBe(202);
      expect((await deleted).status).toBe(204);
    } finally {
      await holder.end();
    }
    const [batch] = await queryRows<{ status: string }>(env.databaseUrl, 'select status from audio_generation_batches where id = $1', [batchId]);
    expect(batch!.status).toBe('cancelled');
    expect(await queryRows(env.databaseUrl, 'select id from webhook_deliveries where endpoint_id = $1', [endpointId])).toEqual([]);
  });
});
