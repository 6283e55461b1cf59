import { spawn, type ChildProcess } from 'node:child_process';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, startTestWorker, type TestApi, type TestWorker } from '../helpers/app';
import { createBatch, expectCountersMatchRows, getBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { startOpenAiSpeechServer, type OpenAiSpeechFake, type SpeechBehaviour } from '../fakes/openai-speech-server';

// The batch pipeline with the real `openai` SDK against a local server that speaks the
// speech API: failures by text, rendition sharing counted at the provider, retries.
let env: TestEnv;
let api: TestApi;
let worker: TestWorker | undefined;
let fake: OpenAiSpeechFake;
let decide: (input: string) => SpeechBehaviour | undefined = () => undefined;

beforeAll(async () => {
  fake = await startOpenAiSpeechServer({ decide: (input) => decide(input) });
  env = await createTestEnv({ SPEECH_PROVIDER: 'openai', OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: `${fake.url}/v1`, PROVIDER_TIMEOUT_MS: '10000' });
  api = await startTestApi(env.config);
});
afterEach(async () => {
  await worker?.close();
  worker = undefined;
  decide = () => undefined;
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
  await fake?.close();
});

const speechRequests = () => fake.requests.filter((r) => r.path.startsWith('/v1/audio/speech'));

/**
 * Whether a queue is paused: BullMQ's rateLimit (what a 429 calls) sets the limiter key to
 * MAX_SAFE_INTEGER for the pause; the limiter's own job count in that key stays far below.
 */
async function isPaused(queue: 'audio-tts' | 'audio-mix'): Promise<boolean> {
  const q = api.ctx.queues[queue];
  const client = (await q.client) as unknown as Redis;
  const [value, ttl] = await Promise.all([client.get(q.keys.limiter!), client.pttl(q.keys.limiter!)]);
  return Number(value) >= Number.MAX_SAFE_INTEGER && ttl > 0;
}

describe('batches through the OpenAI speech API', () => {
  it('synthesizes one voice once for 3 variants that share delivery instructions', async () => {
    worker = await startTestWorker(env.config);
    const before = speechRequests().length;
    const created = await createBatch(api, {
      visionId: 'v-share',
      sections: sampleSections(4, 'Shared'),
      variants: ['voice_only', 'energy', 'focus'],
      voice: 'nova',
    });
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch.status).toBe('completed');
    expect(batch.tracks_completed).toBe(12);
    expect(speechRequests().length - before).toBe(4);
    // The request carried the model, voice and the variant's instructions.
    const last = speechRequests().at(-1)!.body as any;
    expect(last).toMatchObject({ model: 'gpt-4o-mini-tts', voice: 'nova', response_format: 'mp3' });
    expect(typeof last.instructions).toBe('string');
    // A new variant for the already-voiced vision costs mixing only.
    const again = await createBatch(api, { visionId: 'v-share', sections: sampleSections(4, 'Shared'), variants: ['voice_only'], voice: 'nova' });
    expect((await waitForTerminal(api, again.body.id)).status).toBe('completed');
    expect(speechRequests().length - before).toBe(4);
  });

  it('ends partial_success with exact counts and per-track messages when some texts fail', async () => {
    worker = await startTestWorker(env.config);
    decide = (input) => (input.includes('POISON') ? { kind: 'bad-request', message: 'Input contains a forbidden phrase.' } : undefined);
    const sections = sampleSections(5, 'Partial');
    sections[1]!.text = 'POISON one';
    sections[3]!.text = 'POISON two';
    const created = await createBatch(api, { visionId: 'v-partial', sections, variants: ['voice_only', 'sleep'], voice: 'alloy' });
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch).toMatchObject({ status: 'partial_success', tracks_completed: 6, tracks_failed: 4, tracks_pending: 0 });
    const failed = batch.tracks.filter((t: any) => t.status === 'failed');
    expect(failed.map((t: any) => t.section_key).sort()).toEqual(['fun_recreation', 'fun_recreation', 'travel_adventure', 'travel_adventure']);
    for (const t of failed) {
      expect(t.error_type).toBe('SpeechGenerationError');
      expect(t.error_message).toContain('Input contains a forbidden phrase.');
      expect(t.error_message).toContain('400');
      // A 400 is not retried: one attempt per track.
      expect(t.attempts).toBe(1);
    }
    expect(batch.error_message).toContain('4 of 10 tracks failed');
    await expectCountersMatchRows(env.databaseUrl, batch.id);

    // Retry re-runs only the failed tracks; they go back to pending, then finish.
    decide = () => undefined;
    const before = speechRequests().length;
    const retry = await api.request(`/v1/audio/batches/${batch.id}/retry`, { method: 'POST' });
    expect(retry.status).toBe(202);
    const retried = await readJson(retry);
    expect(retried).toMatchObject({ status: 'processing', tracks_failed: 0, tracks_pending: 4, tracks_completed: 6, run: 2 });
    const done = await waitForTerminal(api, batch.id);
    expect(done).toMatchObject({ status: 'completed', tracks_completed: 10, tracks_failed: 0, error_message: null });
    // voice_only and sleep have different instructions: 2 sections × 2 renditions.
    expect(speechRequests().length - before).toBe(4);
    expect((await api.request(`/v1/audio/batches/${batch.id}/retry`, { method: 'POST' })).status).toBe(409);
  });

  it('ends failed when the provider always fails, after 3 attempts with backoff', async () => {
    worker = await startTestWorker(env.config);
    decide = () => 'server-error';
    const created = await createBatch(api, { visionId: 'v-fail', sections: sampleSections(2, 'Failing'), variants: ['voice_only'], voice: 'alloy' });
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch).toMatchObject({ status: 'failed', tracks_failed: 2, tracks_completed: 0 });
    for (const t of batch.tracks) {
      expect(t.attempts).toBe(3);
      expect(t.error_message).toMatch(/500/);
    }
    expect(batch.error_message).toMatch(/^2 of 2 tracks failed/);
  });

  it('waits out a 429 Retry-After without using an attempt, and retries a 500', async () => {
    worker = await startTestWorker(env.config);
    // With 3 attempts, a 429 that used one would leave the job failed after the two 500s.
    fake.script([{ kind: 'rate-limited', retryAfterSeconds: 1 }, 'server-error', 'server-error']);
    const started = Date.now();
    const created = await createBatch(api, { visionId: 'v-429', sections: sampleSections(1, 'Limited'), variants: ['voice_only'], voice: 'echo' });
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch.status).toBe('completed');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    // The 429 put the job back without an attempt: the job failed twice (the 500s) and
    // then succeeded; the track saw four tries in all.
    const job = await api.ctx.queues['audio-tts'].getJob(`tts.${batch.tracks[0].id}.r1`);
    // BullMQ counts the two failures and the success; the 429 is not among them.
    expect(job?.attemptsMade).toBe(3);
    expect(await job?.getState()).toBe('completed');
    expect(batch.tracks[0].attempts).toBe(4);
  });

  it('backs off from a 429 whose Retry-After it cannot read, as from one without the header', async () => {
    // "x 1" was read by Date.parse as a day in 2001, so 0 s: a 1 ms pause, a restart spent and
    // the provider asked again at once (up to RATE_LIMIT_MAX_RESTARTS times in a row).
    worker = await startTestWorker(env.config);
    fake.script([{ kind: 'rate-limited', retryAfter: 'x 1' }]);
    const created = await createBatch(api, { visionId: 'v-429-unreadable', sections: sampleSections(1, 'Unreadable'), variants: ['voice_only'], voice: 'echo' });
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch.status).toBe('completed');
    const job = await api.ctx.queues['audio-tts'].getJob(`tts.${batch.tracks[0].id}.r1`);
    // The 429 used an attempt and its backoff (JOB_BACKOFF_MS), and no restart.
    expect(job?.attemptsMade).toBe(2);
    expect(job?.data.rateLimitRestarts).toBeUndefined();
  });

  it('stops waiting out 429s after RATE_LIMIT_MAX_RESTARTS, then spends attempts and fails with the reason', async () => {
    // Two free restarts, then the job's 3 attempts: 5 requests, none answered but with a 429.
    worker = await startTestWorker({ ...env.config, RATE_LIMIT_MAX_RESTARTS: 2 });
    decide = (input) => (input.includes('Capped') ? { kind: 'rate-limited', retryAfterSeconds: 1 } : undefined);
    const before = speechRequests().length;
    const started = Date.now();
    const created = await createBatch(api, { visionId: 'v-429-cap', sections: sampleSections(1, 'Capped'), variants: ['voice_only'], voice: 'echo' });
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch.status).toBe('failed');
    // Each restart paused the queue for the Retry-After second. (Before every provider queue
    // had a limiter, the pause held only the worker's fetch loop and two restarts were once
    // over in 1.7 s.)
    expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
    expect(speechRequests().length - before).toBe(5);
    const [track] = batch.tracks;
    expect(track).toMatchObject({ status: 'failed', error_type: 'SpeechGenerationError', attempts: 5 });
    expect(track.error_message).toMatch(/429|rate limit/i);
    const job = await api.ctx.queues['audio-tts'].getJob(`tts.${track.id}.r1`);
    expect(job?.attemptsMade).toBe(3);
    expect(await job?.getState()).toBe('failed');
    expect(job?.data.rateLimitRestarts).toBe(2);
  });

  it('caps an absurd Retry-After at an hour\'s pause, still without using an attempt', async () => {
    // 1e17 s: uncapped, Redis refused the pause (PX out of range) and the job failed with
    // Redis's error instead; anything shorter froze the queue for the header's years.
    worker = await startTestWorker(env.config);
    decide = (input) => (input.includes('Absurd') ? { kind: 'rate-limited', retryAfterSeconds: 1e17 } : undefined);
    const created = await createBatch(api, { visionId: 'v-429-absurd', sections: sampleSections(1, 'Absurd'), variants: ['voice_only'], voice: 'echo' });
    await waitFor(() => isPaused('audio-tts'), { timeoutMs: 10_000, what: 'the speech queue to be paused' });
    const q = api.ctx.queues['audio-tts'];
    const ttl = await ((await q.client) as unknown as Redis).pttl(q.keys.limiter!);
    expect(ttl).toBeGreaterThan(3_500_000);
    expect(ttl).toBeLessThanOrEqual(3_600_000);
    const [track] = await queryRows<{ id: string }>(env.databaseUrl, 'select id from audio_tracks where batch_id = $1', [created.body.id]);
    const job = await q.getJob(`tts.${track!.id}.r1`);
    expect(job?.attemptsMade).toBe(0);
    expect(job?.data.rateLimitRestarts).toBe(1);
    // Lift the pause (a new worker, the old one keeps its own 30 s wait) and let the batch end,
    // so that later tests find the queue free.
    await worker.close();
    await ((await q.client) as unknown as Redis).del(q.keys.limiter!);
    decide = () => undefined;
    worker = await startTestWorker(env.config);
    expect((await waitForTerminal(api, created.body.id)).status).toBe('completed');
  });

  it('a 429 pauses the speech queue for every worker, not only the one that was told', async () => {
    // Two workers (each with its own BullMQ worker per queue, as two replicas have) share
    // the queue; whichever gets the 429, neither may call the provider until Retry-After.
    worker = await startTestWorker(env.config);
    const replica = await startTestWorker(env.config);
    try {
      const calls: { input: string; at: number }[] = [];
      let limited = false;
      decide = (input) => {
        calls.push({ input, at: Date.now() });
        if (input.includes('Paused') && !limited) {
          limited = true;
          return { kind: 'rate-limited', retryAfterSeconds: 3 };
        }
        return undefined;
      };
      const first = await createBatch(api, { visionId: 'v-429-replicas', sections: sampleSections(1, 'Paused'), variants: ['voice_only'], voice: 'onyx' });
      await waitFor(() => isPaused('audio-tts'), { timeoutMs: 20_000, what: 'the speech queue to be paused' });
      // Work that arrives during the pause waits too, whichever worker is free.
      const during = await createBatch(api, { visionId: 'v-429-replicas', sections: sampleSections(1, 'During'), variants: ['voice_only'], voice: 'onyx' });
      const batches = await Promise.all([waitForTerminal(api, first.body.id), waitForTerminal(api, during.body.id)]);
      expect(batches.map((b) => b.status)).toEqual(['completed', 'completed']);
      expect(calls.map((c) => c.input.includes('Paused') ? 'paused' : 'during').sort()).toEqual(['during', 'paused', 'paused']);
      const told = calls[0]!.at;
      for (const call of calls.slice(1)) expect(call.at - told).toBeGreaterThanOrEqual(2_900);
    } finally {
      await replica.close();
    }
  });

  it('a 429 while a mix job voices a lost speech job pauses speech, not mixing, and spends no attempt', async () => {
    // No worker yet: the speech job of the first track is removed, so its mix job voices it.
    const created = await createBatch(api, { visionId: 'v-429-lost', sections: sampleSections(2, 'Orphan'), variants: ['voice_only'], voice: 'coral' });
    const [lost] = await queryRows<{ id: string }>(env.databaseUrl, 'select id from audio_tracks where batch_id = $1 order by section_index', [created.body.id]);
    await (await api.ctx.queues['audio-tts'].getJob(`tts.${lost!.id}.r1`))!.remove();
    let limited = false;
    decide = (input) => {
      if (input.startsWith('Orphan') && input.includes('Section 1.') && !limited) {
        limited = true;
        return { kind: 'rate-limited', retryAfterSeconds: 2 };
      }
      return undefined;
    };
    worker = await startTestWorker(env.config);
    await waitFor(() => isPaused('audio-tts'), { timeoutMs: 20_000, what: 'the speech queue to be paused' });
    expect(await isPaused('audio-mix')).toBe(false);
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch).toMatchObject({ status: 'completed', tracks_completed: 2 });
    const mixJob = await api.ctx.queues['audio-mix'].getJob(`mix.${lost!.id}.r1`);
    expect(await mixJob!.getState()).toBe('completed');
    // BullMQ counts the attempt that completed; the pause added none.
    expect(mixJob!.attemptsMade).toBe(1);
    expect(mixJob!.data.rateLimitRestarts).toBe(1);
  });

  it('synthesizes a shared voice once for two concurrent batches on two worker processes', async () => {
    const slow = await startOpenAiSpeechServer({ delayMs: 400 });
    const workerEnv = { ...process.env, ...env.env, OPENAI_BASE_URL: `${slow.url}/v1`, WORKER_QUEUES: 'audio-tts,audio-mix,audio-batch' };
    const children: ChildProcess[] = [0, 1].map(() =>
      spawn(process.execPath, ['--import', 'tsx', 'apps/worker/src/main.ts'], { env: workerEnv, stdio: ['ignore', 'ignore', 'pipe'] }),
    );
    const stderr: string[] = [];
    for (const c of children) c.stderr!.on('data', (d) => stderr.push(String(d)));
    try {
      const body = { visionId: 'v-two', sections: sampleSections(6, 'Concurrent'), variants: ['voice_only'], voice: 'sage' };
      const [a, b] = await Promise.all([createBatch(api, body), createBatch(api, { ...body, variants: ['energy'] })]);
      const [ra, rb] = await Promise.all([waitForTerminal(api, a.body.id), waitForTerminal(api, b.body.id)]);
      expect([ra.status, rb.status]).toEqual(['completed', 'completed']);
      expect(slow.requests.filter((r) => r.path.startsWith('/v1/audio/speech'))).toHaveLength(6);
    } finally {
      for (const c of children) c.kill('SIGTERM');
      await Promise.all(children.map((c) => new Promise((resolve) => (c.exitCode !== null ? resolve(null) : c.once('exit', resolve)))));
      await slow.close();
    }
    expect(stderr.join('')).not.toMatch(/Error:/);
  });
});
