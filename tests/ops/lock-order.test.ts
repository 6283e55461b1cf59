import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { failBookLeftovers, finaliseBook } from '@soundqueue/shared/rollup/books';
import { jobId } from '@soundqueue/shared/queues';
import { segmentScenes } from '@soundqueue/shared/scenes';
import { createWorkerContext, type WorkerContext } from '../../apps/worker/src/index';
import { processAudioBatch } from '../../apps/worker/src/processors/audio-batch';
import { processBook } from '../../apps/worker/src/processors/book';
import { startTestApi, type TestApi } from '../helpers/app';
import { createBatch, expectCountersMatchRows, sampleSections } from '../helpers/batches';
import { expectBookCountsMatchRows, postBook } from '../helpers/books';
import { createTestEnv, lockWaits, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// Lock order: every transition updates a child row (track, spread, soundscape) and then its
// parent's counters (batch, book). The rarer transactions that change children under the
// parent's lock (a root failing its run's leftovers, the book's segmentation) used to lock
// the parent first: meeting a transition half-way (it holding the child, they the parent),
// each waited for the other until PostgreSQL's deadlock check aborted one, a second later.
// Each case here holds a child row as a transition does between its two updates, runs the
// operation until it waits for that row, then lets the transition take the parent and
// commit. Both must succeed.

let env: TestEnv;
let api: TestApi;
let worker: WorkerContext;

beforeAll(async () => {
  // No workers: the flows the API enqueues are never run; each case drives its step itself.
  env = await createTestEnv();
  api = await startTestApi(env.config);
  worker = await createWorkerContext(env.config);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

type Statement = { text: string; values: unknown[] };

/**
 * A transition's two halves in their own transaction, `operation` between them: the child
 * update, then `operation` until it waits for a lock, then the parent update and commit.
 * Returns what `operation` returned; throws what either side threw (a deadlock).
 */
async function meetingATransition<T>(child: Statement, parent: Statement, operation: () => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: env.databaseUrl });
  await client.connect();
  try {
    await client.query('begin');
    expect((await client.query(child.text, child.values)).rowCount).toBe(1);
    const running = operation();
    running.catch(() => undefined);
    await waitFor(async () => (await lockWaits(env.databaseUrl)) > 0, { what: 'the operation to wait for the row the transition holds' });
    expect((await client.query(parent.text, parent.values)).rowCount).toBe(1);
    await client.query('commit');
    return await running;
  } finally {
    await client.end();
  }
}

const fakeJob = (data: unknown) => ({
  data,
  attemptsMade: 0,
  async getIgnoredChildrenFailures() {
    return {};
  },
  async updateData() {},
  async moveToWaitingChildren() {
    return false;
  },
});
const jobRun = (data: unknown) => ({ job: fakeJob(data) as never, token: 't', worker: undefined as never, maxRateLimitRestarts: 0 });

describe('a batch root failing its run\'s leftovers while a track finishes', () => {
  it('waits for the track, then fails only the tracks still unfinished', async () => {
    const created = await createBatch(api, { visionId: 'v', sections: sampleSections(3, 'Lock'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    const tracks = await queryRows<{ id: string }>(env.databaseUrl, `select id from audio_tracks where batch_id = $1 order by id`, [batchId]);
    const finishing = tracks[1]!.id;

    const result = await meetingATransition(
      { text: `update audio_tracks set status = 'completed', mix_status = 'completed', mixed_file_key = 'k', completed_at = now() where id = $1`, values: [finishing] },
      { text: `update audio_generation_batches set tracks_completed = tracks_completed + 1, tracks_pending = tracks_pending - 1 where id = $1`, values: [batchId] },
      () => processAudioBatch(worker, jobRun({ batchId, run: 1 })),
    );

    expect(result.status).toBe('partial_success');
    const rows = await queryRows<{ id: string; status: string }>(env.databaseUrl, `select id, status from audio_tracks where batch_id = $1`, [batchId]);
    expect(rows.find((r) => r.id === finishing)!.status).toBe('completed');
    expect(rows.filter((r) => r.status === 'failed')).toHaveLength(2);
    await expectCountersMatchRows(env.databaseUrl, batchId);
  });
});

const analysis = (setting: string, sceneChanged = true) => ({ sceneChanged, setting, timeOfDay: 'night', mood: 'calm', ambience: ['wind'], confidence: 0.9 });

async function newBook(pages: string[]): Promise<string> {
  const created = await postBook(api, { title: 'Locks', pages });
  expect(created.status).toBe(202);
  return created.body.bookId as string;
}

describe('a book root failing lost spreads while a spread\'s analysis completes', () => {
  it('waits for the spread, then fails only the spreads still unfinished', async () => {
    const bookId = await newBook(['one', 'two', 'three', 'four']);
    const events = await meetingATransition(
      { text: `update book_spreads set status = 'analyzed', analysis = $2 where book_id = $1 and index = 0`, values: [bookId, JSON.stringify(analysis('a forest'))] },
      { text: `update books set processed_spreads = processed_spreads + 1 where id = $1`, values: [bookId] },
      () => failBookLeftovers(worker.db, bookId, { run: 1, spreads: { errorType: 'ContentAnalysisError', message: 'lost', stack: null, attempt: 1 } }),
    );

    expect(events).not.toBeNull();
    const spreads = await queryRows<{ index: number; status: string }>(env.databaseUrl, `select index, status from book_spreads where book_id = $1 order by index`, [bookId]);
    expect(spreads.map((s) => s.status)).toEqual(['analyzed', 'failed']);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });
});

/** A one-spread book, analysed, with a scene and soundscape (in `status`) as segmentation made them. */
async function segmentedBook(soundscapeStatus: 'generating' | 'completed'): Promise<{ bookId: string; sceneId: string; soundscapeId: string }> {
  const bookId = await newBook(['a quiet forest', 'the forest at night']);
  const spreadAnalysis = analysis('a forest');
  await queryRows(env.databaseUrl, `update book_spreads set status = 'analyzed', analysis = $2 where book_id = $1`, [bookId, JSON.stringify(spreadAnalysis)]);
  await queryRows(env.databaseUrl, `update books set processed_spreads = 1 where id = $1`, [bookId]);
  const [planned] = segmentScenes([{ index: 0, firstPage: 1, lastPage: 2, analysis: spreadAnalysis }]);
  const [scene] = await queryRows<{ id: string }>(
    env.databaseUrl,
    `insert into scenes (book_id, index, first_spread, last_spread, first_page, last_page, description, mood, ambience, prompt)
     values ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9) returning id`,
    [bookId, planned!.firstSpread, planned!.lastSpread, planned!.firstPage, planned!.lastPage, planned!.description, planned!.mood, JSON.stringify(planned!.ambience), planned!.prompt],
  );
  const [soundscape] = await queryRows<{ id: string }>(
    env.databaseUrl,
    `insert into soundscapes (scene_id, book_id, user_id, status) values ($1, $2, 'reader', $3) returning id`,
    [scene!.id, bookId, soundscapeStatus],
  );
  await queryRows(env.databaseUrl, `update books set scenes_created = 1, soundscapes_generated = $2 where id = $1`, [bookId, soundscapeStatus === 'completed' ? 1 : 0]);
  return { bookId, sceneId: scene!.id, soundscapeId: soundscape!.id };
}

const completingSoundscape = (bookId: string, soundscapeId: string): [Statement, Statement] =>
  [
    { text: `update soundscapes set status = 'completed', file_key = 'gone.mp3', file_bytes = 1, duration_ms = 1000, completed_at = now() where id = $1`, values: [soundscapeId] },
    { text: `update books set soundscapes_generated = soundscapes_generated + 1 where id = $1`, values: [bookId] },
  ];

describe('a book root failing lost soundscapes while one completes', () => {
  it('waits for the soundscape, counts it made and ends the book ready', async () => {
    const { bookId, soundscapeId } = await segmentedBook('generating');
    const result = await meetingATransition(...completingSoundscape(bookId, soundscapeId), () =>
      finaliseBook(worker.db, bookId, {}, { run: 1, soundscapes: { errorType: 'SoundscapeGenerationError', message: 'lost', stack: null, attempt: 1 } }),
    );

    expect(result.status).toBe('ready');
    const [row] = await queryRows(env.databaseUrl, `select status from soundscapes where id = $1`, [soundscapeId]);
    expect(row.status).toBe('completed');
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });
});

describe('segmentation replacing a scene whose soundscape an older run\'s job is completing', () => {
  it('waits for the soundscape, then replaces the scene and ends the book', async () => {
    // The book's only scene is replaced: its prompt no longer matches what the analysis says.
    const { bookId, sceneId, soundscapeId } = await segmentedBook('generating');
    await queryRows(env.databaseUrl, `update scenes set prompt = 'an older prompt' where id = $1`, [sceneId]);
    // The segment step adds the new scene's soundscape job as a child of the book's root job:
    // the real root the API enqueued (no worker runs it), so the add lands.
    const root = await worker.queues.book.getJob(jobId.book(bookId, 1));
    expect(root).toBeDefined();
    const run = jobRun({ bookId, run: 1, step: 'segment' });
    Object.assign(run.job as object, { id: root!.id, queueQualifiedName: root!.queueQualifiedName });

    const result = await meetingATransition(...completingSoundscape(bookId, soundscapeId), () => processBook(worker, run));

    // Segmented, then finalised by the fake root at once: the new soundscape never ran.
    expect(result.status).toBe('ready');
    const scenes = await queryRows<{ id: string }>(env.databaseUrl, `select id from scenes where book_id = $1`, [bookId]);
    expect(scenes).toHaveLength(1);
    expect(scenes[0]!.id).not.toBe(sceneId);
    expect(await queryRows(env.databaseUrl, `select id from soundscapes where id = $1`, [soundscapeId])).toEqual([]);
    expect((await worker.queues.soundscape.getJobCounts('waiting')).waiting).toBe(1);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });
});

describe('a book root\'s leftovers meeting a segmentation that adds soundscapes', () => {
  it('fails the soundscapes the segmentation added while it waited for the book', async () => {
    // The reconciler's timeout (finaliseBook with leftovers) meets the root's segmentation of
    // the same run: it locks the open soundscapes it finds, then waits for the book's lock,
    // which the segmentation holds while it adds a scene and its soundscape.
    const { bookId } = await segmentedBook('completed');
    const segmentation = new pg.Client({ connectionString: env.databaseUrl });
    await segmentation.connect();
    try {
      await segmentation.query('begin');
      await segmentation.query(`select id from books where id = $1 for update`, [bookId]);
      const [scene] = (
        await segmentation.query(
          `insert into scenes (book_id, index, first_spread, last_spread, first_page, last_page, description, mood, ambience, prompt)
           values ($1, 1, 1, 1, 3, 4, 'later', 'calm', '[]', 'a later scene') returning id`,
          [bookId],
        )
      ).rows;
      await segmentation.query(`insert into soundscapes (scene_id, book_id, user_id) values ($1, $2, 'reader')`, [scene.id, bookId]);
      const finalising = finaliseBook(worker.db, bookId, {}, { run: 1, soundscapes: { errorType: 'SoundscapeGenerationError', message: 'stopped', stack: null, attempt: 0 } });
      finalising.catch(() => undefined);
      await waitFor(async () => (await lockWaits(env.databaseUrl)) > 0, { what: 'the root to wait for the book' });
      await segmentation.query(`update books set scenes_created = 2 where id = $1`, [bookId]);
      await segmentation.query('commit');

      expect((await finalising).status).toBe('ready');
    } finally {
      await segmentation.end();
    }
    const statuses = await queryRows<{ status: string }>(env.databaseUrl, `select status from soundscapes where book_id = $1 order by created_at`, [bookId]);
    expect(statuses.map((s) => s.status)).toEqual(['completed', 'failed']);
    await expectBookCountsMatchRows(env.databaseUrl, bookId);
  });
});

// A cancel takes the batch row first (to decide from its status under the lock), the other
// way round from a transition; it must then never wait for a track, or it and a job starting a
// track (holding the track, waiting for the batch to count it as started) deadlock.
describe('a cancel while a job is starting a track of the batch', () => {
  it('cancels the other pending tracks without waiting for that one, which runs on', async () => {
    const created = await createBatch(api, { visionId: 'v', sections: sampleSections(3, 'Cancel'), variants: ['voice_only'], voice: 'alloy' });
    expect(created.status).toBe(201);
    const batchId = created.body.id as string;
    const tracks = await queryRows<{ id: string }>(env.databaseUrl, `select id from audio_tracks where batch_id = $1 order by id`, [batchId]);
    const starting = tracks[1]!.id;
    const job = new pg.Client({ connectionString: env.databaseUrl });
    await job.connect();
    let answered = false;
    try {
      // startTrack's two halves: the track, then (the batch's first started track) the batch.
      await job.query('begin');
      expect((await job.query(`update audio_tracks set status = 'generating', started_at = now(), attempts = attempts + 1 where id = $1 and status = 'pending'`, [starting])).rowCount).toBe(1);
      const cancel = api.request(`/v1/audio/batches/${batchId}/cancel`, { method: 'POST' }).finally(() => (answered = true));
      await waitFor(async () => answered || (await lockWaits(env.databaseUrl)) > 0, { what: 'the cancel to answer or wait for a lock' });
      expect(answered ? 'answered' : 'waits for a lock').toBe('answered');
      const res = await cancel;
      expect(res.status).toBe(202);
      expect(await res.json()).toMatchObject({ tracks_cancelled: 2, tracks_pending: 1 });
      expect((await job.query(`update audio_generation_batches set status = 'processing', started_at = now() where id = $1 and status = 'pending'`, [batchId])).rowCount).toBe(1);
      await job.query('commit');
    } finally {
      if (!answered) await job.query('rollback').catch(() => undefined);
      await job.end();
    }
    const rows = await queryRows<{ id: string; status: string }>(env.databaseUrl, `select id, status from audio_tracks where batch_id = $1 order by id`, [batchId]);
    expect(rows.map((r) => r.status)).toEqual(['cancelled', 'generating', 'cancelled']);
    await expectCountersMatchRows(env.databaseUrl, batchId);
  });
});
