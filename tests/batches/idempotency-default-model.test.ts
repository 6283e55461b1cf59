import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../helpers/app';
import { createBatch, sampleSections } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';

// A POST /v1/audio/batches without `model` gets the server's OPENAI_TTS_MODEL. That default
// was filled in before the body was hashed for Idempotency-Key, so once an operator changed
// the setting, the client's exact repeat (same key, same body) was answered 409
// idempotency_conflict instead of with its batch. The API before and after the change are two
// API processes on one database here.
let env: TestEnv;
let before: TestApi;
let after: TestApi;

beforeAll(async () => {
  env = await createTestEnv({ SPEECH_PROVIDER: 'local', OPENAI_TTS_MODEL: 'model-a' });
  before = await startTestApi(env.config);
  after = await startTestApi({ ...env.config, OPENAI_TTS_MODEL: 'model-b' });
});
afterAll(async () => {
  await before?.close();
  await after?.close();
  await env?.cleanup();
});

const body = (visionId: string) => ({ visionId, sections: sampleSections(2, visionId), variants: ['voice_only'], voice: 'alloy' });
const withKey = (key: string) => ({ headers: { 'Idempotency-Key': key } });

/** The hash the rule before this fix stored: the body with the model the batch was given. */
function hashStoredBefore(b: ReturnType<typeof body>, model: string): string {
  return createHash('sha256')
    .update(JSON.stringify({ visionId: b.visionId, sections: b.sections.map((s) => ({ key: s.key, title: s.title ?? null, text: s.text })), variants: b.variants, voice: b.voice, model }))
    .digest('hex');
}

describe('Idempotency-Key and the default model', () => {
  it('a repeat of a body without `model` returns its batch after OPENAI_TTS_MODEL changed', async () => {
    const first = await createBatch(before, body('omitted'), withKey('omitted'));
    expect(first.status).toBe(201);
    const repeat = await createBatch(after, body('omitted'), withKey('omitted'));
    expect(repeat.status, JSON.stringify(repeat.body)).toBe(200);
    expect(repeat.body.id).toBe(first.body.id);
    // The batch keeps the model it was made with.
    const [row] = await queryRows(env.databaseUrl, 'select model from audio_generation_batches where id = $1', [first.body.id]);
    expect(row.model).toBe('model-a');
    // A body that differs is still a conflict, also one naming the model the first was given.
    for (const other of [body('omitted-other'), { ...body('omitted'), model: 'model-a' }, { ...body('omitted'), model: 'model-b' }]) {
      const res = await createBatch(after, other, withKey('omitted'));
      expect(res.status, JSON.stringify(other)).toBe(409);
      expect(res.body.error.code).toBe('idempotency_conflict');
    }
  });

  it('a body naming the default model and one leaving it out are different bodies', async () => {
    const named = await createBatch(after, { ...body('named'), model: 'model-b' }, withKey('named'));
    expect(named.status).toBe(201);
    expect((await createBatch(after, { ...body('named'), model: 'model-b' }, withKey('named'))).status).toBe(200);
    const left = await createBatch(after, body('named'), withKey('named'));
    expect(left.status).toBe(409);
    expect(left.body.error.code).toBe('idempotency_conflict');
  });

  // Batches created before this fix hold the hash of the body with the model filled in; a
  // repeat of their request still matches after the default changed. That hash cannot tell a
  // body without `model` from one naming the model the batch was given, so for those batches
  // both match, as they did before.
  it('a batch whose hash was stored by the rule before still answers repeats of its request', async () => {
    const created = await createBatch(before, body('stored before'), withKey('stored before'));
    expect(created.status).toBe(201);
    await queryRows(env.databaseUrl, 'update audio_generation_batches set request_hash = $2 where id = $1', [created.body.id, hashStoredBefore(body('stored before'), 'model-a')]);
    for (const api of [before, after]) {
      const repeat = await createBatch(api, body('stored before'), withKey('stored before'));
      expect(repeat.status, JSON.stringify(repeat.body)).toBe(200);
      expect(repeat.body.id).toBe(created.body.id);
    }
    expect((await createBatch(after, { ...body('stored before'), model: 'model-a' }, withKey('stored before'))).status).toBe(200);
    for (const other of [body('stored before, other'), { ...body('stored before'), model: 'model-b' }]) {
      const res = await createBatch(after, other, withKey('stored before'));
      expect(res.status, JSON.stringify(other)).toBe(409);
    }
  });
});
