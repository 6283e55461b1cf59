import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { finaliseBook } from '@soundqueue/shared/rollup/books';
import { finaliseBatch, finishTrack } from '@soundqueue/shared/rollup/tracks';
import { readJson, startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { postBook } from '../helpers/books';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// A terminal event's webhooks (batch.failed, book.ready, ...) are what an integration waits
// for. They were recorded after the change committed, by the notifier: a worker that stopped
// (killed, out of memory, its database connection lost) between its commit and that record
// left the batch finished and its webhooks never sent, since nothing makes the change again.
// Here a batch and a book are finalised as their root jobs do, and nothing is published after
// (the process "stops" there): the deliveries must exist already, for the reconciler to queue.
// The same holds for a track failing while its batch still runs (its job's last attempt):
// that transition committed alone, and its track.failed was recorded after it.
// No worker runs: the test moves the rows itself.
let env: TestEnv;
let api: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ WEBHOOK_ALLOW_PRIVATE: 'true' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const deliveries = (type: string) =>
  queryRows<{ status: string; attempts: number; payload: any; endpoint_id: string }>(
    env.databaseUrl,
    'select status, attempts, payload, endpoint_id from webhook_deliveries where event_type = $1',
    [type],
  );

async function subscribe(events: string[], user?: string): Promise<string> {
  const res = await api.request('/v1/webhooks', { method: 'POST', json: { url: 'http://127.0.0.1:9/hook', events }, ...(user ? { user } : {}) });
  expect(res.status).toBe(201);
  return (await readJson(res)).id as string;
}

describe('webhooks of a terminal change are committed with it', () => {
  it("a batch's batch.failed and its leftovers' track.failed", async () => {
    const endpoint = await subscribe(['batch.failed', 'track.failed']);
    const created = await createBatch(api, { visionId: 'with-change', sections: sampleSections(2), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    // Its run started; its jobs were lost, so the root job fails the leftovers.
    await queryRows(env.databaseUrl, `update audio_generation_batches set status = 'processing' where id = $1`, [batchId]);
    const result = await finaliseBatch(api.ctx.db, batchId, { run: 1, errorType: 'QueueError', reason: () => 'lost' });
    expect(result.status).toBe('failed');

    const failed = await deliveries('batch.failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ status: 'pending', attempts: 0, endpoint_id: endpoint, payload: { type: 'batch.failed', data: { batch_id: batchId, status: 'failed' } } });
    expect(failed[0]!.payload.id).toMatch(/^evt_[0-9a-f]{32}$/);
    expect(await deliveries('track.failed')).toHaveLength(2);
    // The events say so: the notifier only queues these, and records nothing twice.
    expect(result.events.filter((e) => (e.webhookDeliveries ?? []).length > 0).map((e) => e.type).sort()).toEqual(['batch.failed', 'track.failed', 'track.failed']);
    await api.ctx.publish(result.events);
    expect(await deliveries('batch.failed')).toHaveLength(1);
    expect(await deliveries('track.failed')).toHaveLength(2);
  });

  it("a book's book.ready", async () => {
    await subscribe(['book.ready'], 'reader');
    const posted = await postBook(api, { title: 'Committed', pages: ['a forest', 'the sea'] }, 'reader');
    expect(posted.status).toBe(202);
    const bookId = posted.body.bookId as string;
    await queryRows(env.databaseUrl, `update books set status = 'processing', processed_spreads = 1 where id = $1`, [bookId]);
    const result = await finaliseBook(api.ctx.db, bookId, {});
    expect(result.status).toBe('ready');
    const ready = await deliveries('book.ready');
    expect(ready).toHaveLength(1);
    expect(ready[0]).toMatchObject({ status: 'pending', payload: { type: 'book.ready', data: { book_id: bookId, status: 'ready' } } });
  });

  it("a track's track.failed while its batch runs", async () => {
    const endpoint = await subscribe(['track.failed'], 'runner');
    const created = await createBatch(api, { visionId: 'running', sections: sampleSections(2), variants: ['voice_only'], voice: 'alloy' }, { user: 'runner' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    const tracks = await queryRows<{ id: string }>(env.databaseUrl, 'select id from audio_tracks where batch_id = $1 order by id', [batchId]);
    const failedFor = async (trackId: string) =>
      (await deliveries('track.failed')).filter((d) => d.payload.data.batch_id === batchId && d.payload.data.trackId === trackId);

    // The speech job's last attempt fails the track, as audio-tts.ts does; the process stops
    // before publishing.
    const failed = await finishTrack(api.ctx.db, tracks[0]!.id, { status: 'failed', errorType: 'SpeechGenerationError', errorMessage: 'Speech: no' });
    expect(failed.changed).toBe(true);
    const recorded = await failedFor(tracks[0]!.id);
    expect(recorded).toHaveLength(1);
    expect(recorded[0]).toMatchObject({ status: 'pending', attempts: 0, endpoint_id: endpoint, payload: { type: 'track.failed', data: { errorMessage: 'Speech: no', status: 'failed' } } });
    expect(failed.events.filter((e) => (e.webhookDeliveries ?? []).length > 0).map((e) => e.type)).toEqual(['track.failed']);
    await api.ctx.publish(failed.events);
    expect(await failedFor(tracks[0]!.id)).toHaveLength(1);

    // And the other way round: a failure whose deliveries cannot be recorded does not
    // commit either (the job's error says why, and the root's leftovers fail the track).
    await queryRows(
      env.databaseUrl,
      `create function refuse_delivery() returns trigger language plpgsql as $$ begin raise exception 'deliveries refused'; end $$;
       create trigger refuse_delivery before insert on webhook_deliveries for each row execute function refuse_delivery()`,
    );
    try {
      await expect(finishTrack(api.ctx.db, tracks[1]!.id, { status: 'failed', errorType: 'MixingError', errorMessage: 'Mixing: no' })).rejects.toThrow();
    } finally {
      await queryRows(env.databaseUrl, 'drop trigger refuse_delivery on webhook_deliveries; drop function refuse_delivery()');
    }
    const [second] = await queryRows<{ status: string }>(env.databaseUrl, 'select status from audio_tracks where id = $1', [tracks[1]!.id]);
    expect(second!.status).toBe('pending');
    const [counts] = await queryRows<{ tracks_failed: number; tracks_pending: number }>(env.databaseUrl, 'select tracks_failed, tracks_pending from audio_generation_batches where id = $1', [batchId]);
    expect(counts).toEqual({ tracks_failed: 1, tracks_pending: 1 });
  });

  it('a completed track still costs one statement', async () => {
    // Only failures pay for the transaction: benchmark 1 measures every track's round trips.
    const created = await createBatch(api, { visionId: 'completing', sections: sampleSections(1), variants: ['voice_only'], voice: 'alloy' });
    const [track] = await queryRows<{ id: string }>(env.databaseUrl, 'select id from audio_tracks where batch_id = $1', [created.body.id]);
    const sent = vi.spyOn(pg.Client.prototype, 'query');
    try {
      const done = await finishTrack(api.ctx.db, track!.id, { status: 'completed', mixedFileKey: 'k', mixedBytes: 1, durationMs: 1 });
      expect(done.changed).toBe(true);
      expect(sent).toHaveBeenCalledTimes(1);
    } finally {
      sent.mockRestore();
    }
  });
});
