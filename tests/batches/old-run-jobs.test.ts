import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import { finaliseBatch } from '@soundqueue/shared/rollup/tracks';
import { createWorkerContext, ffmpegMixer, type Mixer, type Providers, type WorkerContext } from '@soundqueue/worker';
import { processAudioMix } from '../../apps/worker/src/processors/audio-mix';
import { processAudioTts } from '../../apps/worker/src/processors/audio-tts';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections, waitForTerminal } from '../helpers/batches';
import { speechRefusal, speechWith } from '../helpers/providers';
import { startOwnRedis, type OwnRedis } from '../helpers/redis-server';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

// An enqueue the API gave up on (ENQUEUE_TIMEOUT_MS) can still land: its MULTI/EXEC was
// written before Redis stalled (apps/api/src/enqueue.ts). The batch is recorded failed with a
// QueueError, the user retries (run 2: the tracks are pending again, with run 2's jobs), and
// run 1's jobs are in Redis too. They used to start the tracks, voice and mix them alongside
// run 2's jobs: every track's work done twice. A job of a run that is no longer the batch's
// current one now ends at once, changing nothing.
//
// The API reaches its own redis-server through a TCP proxy the test holds; the worker side
// talks to Redis directly.
let redis: OwnRedis;
let proxy: TcpProxy;
let env: TestEnv;
let api: TestApi;
let direct: Redis;
let ctx: WorkerContext | undefined;
let worker: TestWorker | undefined;
let speechCalls = 0;
let mixes = 0;
/** While set, every speech call waits for it, then fails if it says so for the call's text. */
let speechGate: Promise<(text: string) => boolean> | undefined;

function countingSeams(config: TestEnv['config']): { providers: Providers; mixer: Mixer } {
  return {
    providers: speechWith(config, async (request) => {
      speechCalls += 1;
      const fails = await speechGate;
      if (fails?.(request.text)) throw speechRefusal();
    }),
    mixer: {
      ...ffmpegMixer,
      async mixTrack(input) {
        mixes += 1;
        return ffmpegMixer.mixTrack(input);
      },
    },
  };
}

beforeAll(async () => {
  redis = await startOwnRedis();
  proxy = await startTcpProxy(redis.url);
  env = await createTestEnv({ REDIS_URL: proxy.url, ENQUEUE_TIMEOUT_MS: '1000', SPEECH_PROVIDER: 'local' });
  api = await startTestApi(env.config);
  direct = new Redis(redis.url, { maxRetriesPerRequest: null });
});
afterEach(async () => {
  speechGate = undefined;
  speechCalls = 0;
  mixes = 0;
  await worker?.close();
  worker = undefined;
  await ctx?.close();
  ctx = undefined;
});
afterAll(async () => {
  proxy?.release();
  await api?.close();
  direct?.disconnect();
  await proxy?.close();
  await env?.cleanup();
  await redis?.stop();
});

/** What a processor gets from the worker for a job fetched from its queue. */
const runOf = (job: Job) => ({ job, token: undefined, worker: undefined as never, maxRateLimitRestarts: 0 });

describe('jobs of a run the batch has moved on from', () => {
  it('end without touching the retried tracks or calling a provider; the retry run does the work once', { timeout: 120_000 }, async () => {
    // Held once the flows connection is ready, so the flow's MULTI/EXEC is written and waits.
    await waitFor(async () => (await api.ctx.flows.waitUntilReady()).status === 'ready', { what: 'the flows connection ready' });
    proxy.hold();
    const created = await createBatch(api, { visionId: 'late', sections: sampleSections(2, 'Late'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(503);
    const batchId = created.body.error.details.batchId as string;
    proxy.release();
    // The flow the API gave up on reaches Redis after all.
    await waitFor(async () => (await direct.exists(`${env.prefix}:audio-batch:batch.${batchId}.r1`)) === 1, { what: "run 1's flow in Redis" });
    const [failed] = await queryRows(env.databaseUrl, 'select status, run from audio_generation_batches where id = $1', [batchId]);
    expect(failed).toEqual({ status: 'failed', run: 1 });

    const retry = await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST' });
    expect(retry.status).toBe(202);
    expect((await readJson(retry)).run).toBe(2);
    const before = await queryRows(env.databaseUrl, 'select id, status, attempts, version, rendition_key from audio_tracks where batch_id = $1 order by id', [batchId]);
    expect(before.map((t) => t.status)).toEqual(['pending', 'pending']);

    // Run 1's jobs, as a worker would take them from Redis now.
    const workerConfig = { ...env.config, REDIS_URL: redis.url };
    ctx = await createWorkerContext(workerConfig, countingSeams(workerConfig));
    for (const track of before) {
      const speak = await ctx.queues['audio-tts'].getJob(`tts.${track.id}.r1`);
      const mix = await ctx.queues['audio-mix'].getJob(`mix.${track.id}.r1`);
      expect(speak?.data).toMatchObject({ batchId, trackId: track.id });
      expect(mix?.data).toMatchObject({ batchId, trackId: track.id });
      expect(await processAudioTts(ctx, runOf(speak!))).toEqual({ skipped: 'run 1 is no longer the batch\'s run (2)' });
      expect(await processAudioMix(ctx, runOf(mix!))).toEqual({ skipped: 'run 1 is no longer the batch\'s run (2)' });
    }
    const after = await queryRows(env.databaseUrl, 'select id, status, attempts, version, rendition_key from audio_tracks where batch_id = $1 order by id', [batchId]);
    expect(after).toEqual(before);
    expect({ speechCalls, mixes }).toEqual({ speechCalls: 0, mixes: 0 });

    // The workers take both runs' jobs: run 1's end at once, run 2's voice and mix each track once.
    worker = await startTestWorker(workerConfig, countingSeams(workerConfig));
    const batch = await waitForTerminal(api, batchId);
    expect(batch).toMatchObject({ status: 'completed', tracks_completed: 2 });
    await expectCountersMatchRows(env.databaseUrl, batchId);
    const tracks = await queryRows(env.databaseUrl, 'select attempts from audio_tracks where batch_id = $1', [batchId]);
    expect(tracks.map((t) => t.attempts)).toEqual([1, 1]);
    expect({ speechCalls, mixes }).toEqual({ speechCalls: 2, mixes: 2 });
    for (const track of before) {
      const oldMix = await waitFor(async () => {
        const job = await worker!.ctx.queues['audio-mix'].getJob(`mix.${track.id}.r1`);
        return job?.finishedOn ? job : null;
      }, { what: "run 1's mix job to end" });
      expect(oldMix.returnvalue).toEqual({ skipped: 'run 1 is no longer the batch\'s run (2)' });
    }
  });

  // A run-1 speech job still in its provider call when run 1 is finalised (the API giving up
  // on an enqueue whose flow had landed; the reconciler's STUCK_AFTER_MS) and retried: before,
  // its failure on its last attempt failed run 2's pending track, and its voice was attached
  // to it (a retried track starts with none, so that its own mix job voices it if its speech
  // job is lost).
  it('a job of run 1 that was under way changes nothing of run 2 when it ends', { timeout: 120_000 }, async () => {
    const created = await createBatch(api, { visionId: 'under way', sections: sampleSections(2, 'Under way'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    const workerConfig = { ...env.config, REDIS_URL: redis.url };
    ctx = await createWorkerContext(workerConfig, countingSeams(workerConfig));
    let open!: (fails: (text: string) => boolean) => void;
    speechGate = new Promise((resolve) => (open = resolve));
    const tracks = await queryRows(env.databaseUrl, 'select id, section_index from audio_tracks where batch_id = $1 order by section_index', [batchId]);
    const jobs = await Promise.all(tracks.map(async (t) => (await ctx!.queues['audio-tts'].getJob(`tts.${t.id}.r1`))!));
    const outcomes = Promise.allSettled(jobs.map((job) => processAudioTts(ctx!, runOf(job))));
    await waitFor(async () => speechCalls === 2, { what: 'both speech calls under way' });

    const reason = "Could not enqueue the batch's jobs: Redis did not accept the jobs within 1000 ms";
    await finaliseBatch(ctx.db, batchId, { run: 1, errorType: 'QueueError', reason: () => reason, errorMessage: reason });
    const retry = await api.request(`/v1/audio/batches/${batchId}/retry`, { method: 'POST' });
    expect(retry.status).toBe(202);
    const retried = await queryRows(env.databaseUrl, 'select id, status, attempts, version, rendition_key, error_message from audio_tracks where batch_id = $1 order by section_index', [batchId]);
    expect(retried.map((t) => t.status)).toEqual(['pending', 'pending']);

    // The first section's call fails (not retryable: the job's last attempt), the second's succeeds.
    open((text) => text.includes('Section 1.'));
    const [failed, voiced] = await outcomes;
    expect(failed).toMatchObject({ status: 'rejected', reason: { message: 'provider said 400' } });
    expect(voiced).toEqual({ status: 'fulfilled', value: { skipped: "run 1 is no longer the batch's run (2)" } });
    const after = await queryRows(env.databaseUrl, 'select id, status, attempts, version, rendition_key, error_message from audio_tracks where batch_id = $1 order by section_index', [batchId]);
    expect(after).toEqual(retried);
    const [batch] = await queryRows(env.databaseUrl, 'select status, run, tracks_pending, tracks_failed from audio_generation_batches where id = $1', [batchId]);
    expect(batch).toEqual({ status: 'processing', run: 2, tracks_pending: 2, tracks_failed: 0 });
    await expectCountersMatchRows(env.databaseUrl, batchId);
  });

  // Jobs queued before payloads carried their run (in Redis when this version is deployed)
  // are taken for the batch's current run.
  it('a job without a run in its payload is taken for the current run', { timeout: 120_000 }, async () => {
    const created = await createBatch(api, { visionId: 'older jobs', sections: sampleSections(2, 'Older'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    const tracks = await queryRows(env.databaseUrl, 'select id from audio_tracks where batch_id = $1', [batchId]);
    for (const t of tracks) {
      for (const job of [await api.ctx.queues['audio-tts'].getJob(`tts.${t.id}.r1`), await api.ctx.queues['audio-mix'].getJob(`mix.${t.id}.r1`)]) {
        expect(job?.data).toEqual({ batchId, trackId: t.id, run: 1 });
        await job!.updateData({ batchId, trackId: t.id });
      }
    }
    const workerConfig = { ...env.config, REDIS_URL: redis.url };
    worker = await startTestWorker(workerConfig, countingSeams(workerConfig));
    const batch = await waitForTerminal(api, batchId);
    expect(batch).toMatchObject({ status: 'completed', tracks_completed: 2 });
    // Done by those jobs themselves (a skipped one would have left its track to the root,
    // which fails it as lost).
    for (const t of tracks) {
      expect((await worker.ctx.queues['audio-tts'].getJob(`tts.${t.id}.r1`))?.returnvalue).toHaveProperty('renditionKey');
      expect((await worker.ctx.queues['audio-mix'].getJob(`mix.${t.id}.r1`))?.returnvalue).toHaveProperty('durationMs');
    }
  });
});
