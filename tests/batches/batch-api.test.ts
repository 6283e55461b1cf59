import { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, startTestWorker, tokenFor, type TestApi } from '../helpers/app';
import { createBatch, expectCountersMatchRows, getBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { startOpenAiSpeechServer, type OpenAiSpeechFake } from '../fakes/openai-speech-server';

let env: TestEnv;
let api: TestApi;
let fake: OpenAiSpeechFake;

beforeAll(async () => {
  fake = await startOpenAiSpeechServer({ delayMs: 300 });
  env = await createTestEnv({ SPEECH_PROVIDER: 'openai', OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: `${fake.url}/v1`, WORKER_CONCURRENCY_AUDIO_TTS: '1' });
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
  await fake?.close();
});

const body = (visionId: string, n = 2) => ({ visionId, sections: sampleSections(n, visionId), variants: ['voice_only'], voice: 'alloy' });

describe('batch API', () => {
  it('honours Idempotency-Key: same body returns the batch, another body is a 409', async () => {
    const headers = { 'Idempotency-Key': 'key-1' };
    const first = await createBatch(api, body('idem'), { headers });
    expect(first.status).toBe(201);
    const again = await createBatch(api, body('idem'), { headers });
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(first.body.id);
    const other = await createBatch(api, body('idem-other'), { headers });
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe('idempotency_conflict');
    // Keys are per user: another user's same key is a new batch.
    const otherUser = await createBatch(api, body('idem'), { headers, user: 'user-b' });
    expect(otherUser.status).toBe(201);
    // Concurrent repeats make one batch.
    const racing = await Promise.all([0, 1, 2, 3].map(() => createBatch(api, body('race'), { headers: { 'Idempotency-Key': 'race' } })));
    expect(new Set(racing.map((r) => r.body.id)).size).toBe(1);
  });

  it('validates input and writes nothing on a 4xx', async () => {
    const before = (await readJson(await api.request('/v1/audio/batches?limit=100'))).batches.length;
    const cases: [unknown, RegExp][] = [
      [{ ...body('x'), sections: [] }, /at least one section/],
      [{ ...body('x'), sections: sampleSections(14).concat(sampleSections(1)) }, /at most 14 sections/],
      [{ ...body('x'), sections: [{ key: 'a', text: 'x' }, { key: 'a', text: 'y' }] }, /duplicate section key "a"/],
      [{ ...body('x'), sections: [{ key: 'a', text: 'x'.repeat(20_001) }] }, /at most 20000 characters/],
      [{ ...body('x'), sections: [{ key: 'a', text: '   ' }] }, /must contain text/],
      [{ ...body('x'), variants: [] }, /at least one variant/],
      [{ ...body('x'), variants: ['disco'] }, /must be one of/],
      [{ ...body('x'), voice: 'robot' }, /must be one of/],
      [{ ...body('x'), extra: 1 }, /extra|unrecognized/i],
    ];
    for (const [input, message] of cases) {
      const res = await createBatch(api, input);
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.error.code).toBe('validation_failed');
      expect([res.body.error.message, ...res.body.error.details.map((d: any) => d.message)].join(" | ")).toMatch(message);
    }
    const after = (await readJson(await api.request('/v1/audio/batches?limit=100'))).batches.length;
    expect(after).toBe(before);
  });

  it('takes the largest valid request however its JSON escapes the text', async () => {
    // 14 sections of 20,000 characters are valid; a client whose JSON escapes non-ASCII text
    // (Python's json.dumps by default) spends 6 bytes ("\\u4f60") on each character, 1.7 MB
    // in all. Before, the 1 MiB body limit answered such a request 413.
    const sections = sampleSections(14).map((s) => ({ ...s, text: '你'.repeat(20_000) }));
    const json = JSON.stringify({ visionId: 'escaped', sections, variants: ['voice_only'], voice: 'alloy' }).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
    expect(json.length).toBeGreaterThan(1024 * 1024);
    const res = await api.request('/v1/audio/batches', { method: 'POST', body: json, headers: { 'Content-Type': 'application/json' } });
    const created = await readJson(res);
    expect(res.status, JSON.stringify(created)).toBe(201);
    expect(created.total_tracks_expected).toBe(14);
    // Nothing of it is to be voiced here (the tests after this one start workers).
    expect((await api.request(`/v1/audio/batches/${created.id}/cancel`, { method: 'POST' })).status).toBe(202);
  });

  it('lists newest first with cursor paging, by vision and status=active', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await createBatch(api, body('listing', 1), { user: 'lister' })).body.id);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await readJson(await api.request(`/v1/audio/batches?visionId=listing&limit=2${cursor ? `&cursor=${cursor}` : ''}`, { user: 'lister' }));
      seen.push(...page.batches.map((b: any) => b.id));
      cursor = page.next_cursor;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse());
    const active = await readJson(await api.request('/v1/audio/batches?status=active', { user: 'lister' }));
    expect(active.batches.length).toBe(5);
    expect((await api.request('/v1/audio/batches?status=bogus', { user: 'lister' })).status).toBe(400);
    expect((await api.request('/v1/audio/batches?cursor=zzz', { user: 'lister' })).status).toBe(400);
  });

  it("answers 404 for another user's batch, set and track, and for malformed ids", async () => {
    const mine = await createBatch(api, body('private', 1), { user: 'owner' });
    const batch = await getBatch(api, mine.body.id, 'owner');
    for (const path of [
      `/v1/audio/batches/${batch.id}`,
      `/v1/audio/sets/${batch.audio_set_ids[0]}`,
      `/v1/audio/tracks/${batch.tracks[0].id}/audio`,
    ]) {
      const res = await api.request(path, { user: 'intruder' });
      expect(res.status, path).toBe(404);
    }
    expect((await api.request(`/v1/audio/batches/${batch.id}/retry`, { method: 'POST', user: 'intruder' })).status).toBe(404);
    expect((await api.request(`/v1/audio/batches/${batch.id}/cancel`, { method: 'POST', user: 'intruder' })).status).toBe(404);
    for (const bad of ['123', 'not-a-uuid', '..%2F..%2Fetc%2Fpasswd', "1' or '1'='1"]) {
      expect((await api.request(`/v1/audio/batches/${bad}`)).status).toBe(404);
      expect((await api.request(`/v1/audio/tracks/${bad}/audio`)).status).toBe(404);
    }
  });

  it('cancels tracks not started; the batch ends cancelled', async () => {
    // No worker runs yet: every track is pending, so all are cancelled at once.
    const created = await createBatch(api, body('cancel-all', 3));
    const res = await api.request(`/v1/audio/batches/${created.body.id}/cancel`, { method: 'POST' });
    expect(res.status).toBe(202);
    const cancelled = await readJson(res);
    expect(cancelled).toMatchObject({ status: 'cancelled', tracks_cancelled: 3, tracks_pending: 0 });
    expect(cancelled.error_message).toMatch(/^Cancelled: 3 of 3 tracks were not started/);
    expect((await api.request(`/v1/audio/batches/${created.body.id}/cancel`, { method: 'POST' })).status).toBe(409);
    await expectCountersMatchRows(env.databaseUrl, created.body.id);

    // With a worker running one track at a time, the running track finishes and the rest
    // are cancelled.
    const worker = await startTestWorker(env.config);
    try {
      const running = await createBatch(api, body('cancel-some', 5));
      await waitFor(async () => (await getBatch(api, running.body.id)).tracks.some((t: any) => t.status !== 'pending'), { what: 'a track to start' });
      expect((await api.request(`/v1/audio/batches/${running.body.id}/cancel`, { method: 'POST' })).status).toBe(202);
      const done = await waitForTerminal(api, running.body.id);
      expect(done.status).toBe('cancelled');
      expect(done.tracks_completed).toBeGreaterThanOrEqual(1);
      expect(done.tracks_cancelled).toBeGreaterThanOrEqual(1);
      expect(done.tracks_completed + done.tracks_cancelled).toBe(5);
      await expectCountersMatchRows(env.databaseUrl, done.id);
    } finally {
      await worker.close();
    }
  });

  it('serves audio with ETag and HTTP Range (206, suffix, 416)', async () => {
    const worker = await startTestWorker(env.config);
    try {
      const created = await createBatch(api, body('range', 1));
      const batch = await waitForTerminal(api, created.body.id);
      const url = batch.tracks[0].audio_url;
      const full = await api.request(url);
      expect(full.status).toBe(200);
      const bytes = Buffer.from(await full.arrayBuffer());
      expect(Number(full.headers.get('content-length'))).toBe(bytes.length);
      expect(full.headers.get('accept-ranges')).toBe('bytes');
      const etag = full.headers.get('etag')!;
      expect(etag).toBeTruthy();

      const first = await api.request(url, { headers: { Range: 'bytes=0-99' } });
      expect(first.status).toBe(206);
      expect(first.headers.get('content-range')).toBe(`bytes 0-99/${bytes.length}`);
      expect(Buffer.from(await first.arrayBuffer()).equals(bytes.subarray(0, 100))).toBe(true);

      const suffix = await api.request(url, { headers: { Range: 'bytes=-50' } });
      expect(suffix.status).toBe(206);
      expect(Buffer.from(await suffix.arrayBuffer()).equals(bytes.subarray(bytes.length - 50))).toBe(true);

      const open = await api.request(url, { headers: { Range: `bytes=${bytes.length - 10}-` } });
      expect(open.status).toBe(206);
      expect((await open.arrayBuffer()).byteLength).toBe(10);

      const outside = await api.request(url, { headers: { Range: `bytes=${bytes.length}-` } });
      expect(outside.status).toBe(416);
      expect(outside.headers.get('content-range')).toBe(`bytes */${bytes.length}`);
      expect((await readJson(outside)).error.code).toBe('range_not_satisfiable');
      // The 416's body is JSON, said as such, and nothing caches it as the audio.
      expect(outside.headers.get('content-type')).toMatch(/^application\/json/);
      expect(outside.headers.get('cache-control')).toBeNull();
      expect(outside.headers.get('content-disposition')).toBeNull();
      expect(outside.headers.get('etag')).not.toBe(etag);

      const notModified = await api.request(url, { headers: { 'If-None-Match': etag } });
      expect(notModified.status).toBe(304);
      expect(notModified.headers.get('etag')).toBe(etag);
      expect(notModified.headers.get('cache-control')).toBe('private, max-age=3600');
    } finally {
      await worker.close();
    }
  });

  it('lets the connection of a finished download go after the keep-alive timeout, as after any response', async () => {
    // The audio response's idle timeout was cleared with setTimeout(0) after the file was
    // sent, which also cleared the keep-alive timeout Node had just set on the connection: a
    // client that kept it open after the file held a socket of the API for ever. The client
    // here is a plain socket, which (unlike Node's agent) does not close by itself on the
    // Keep-Alive hint.
    const worker = await startTestWorker(env.config);
    const own = await startTestApi(env.config);
    const socket = new Socket();
    try {
      own.server.keepAliveTimeout = 500;
      const created = await createBatch(api, body('keep-alive', 1));
      const batch = await waitForTerminal(api, created.body.id);
      const size = (await (await api.request(batch.tracks[0].audio_url)).arrayBuffer()).byteLength;
      const { port } = new URL(own.url);
      await new Promise<void>((resolve, reject) => socket.once('error', reject).connect(Number(port), '127.0.0.1', resolve));
      let received = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
      let closed = false;
      socket.once('close', () => (closed = true));
      socket.write(`GET ${batch.tracks[0].audio_url} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${await tokenFor('user-a')}\r\n\r\n`);
      await waitFor(() => {
        const headerEnd = received.indexOf('\r\n\r\n');
        return headerEnd >= 0 && received.length - headerEnd - 4 >= size;
      }, { what: 'the whole file' });
      expect(received.subarray(0, 15).toString()).toBe('HTTP/1.1 200 OK');
      // Well within 5 s of the 0.5 s keep-alive timeout (before: never).
      await waitFor(() => closed || null, { timeoutMs: 5_000, what: 'the API to close the idle connection' });
    } finally {
      socket.destroy();
      await own.close();
      await worker.close();
    }
  });

  it('plays through a playback URL: no header, Range and HEAD work, and the token opens nothing else', async () => {
    const worker = await startTestWorker(env.config);
    try {
      const created = await createBatch(api, body('playback', 2));
      const batch = await waitForTerminal(api, created.body.id);
      const [track, other] = batch.tracks;
      const minted = await api.request('/v1/playback-urls', { method: 'POST', json: { audio_url: track.audio_url } });
      expect(minted.status).toBe(201);
      const { url, expires_in } = await readJson(minted);
      expect(expires_in).toBe(3600);
      expect(url.startsWith(`${track.audio_url}?playback_token=`)).toBe(true);

      // What an <audio src> does: no Authorization header, whole file, ranges, HEAD.
      const full = await api.request(url, { user: null });
      expect(full.status).toBe(200);
      const bytes = Buffer.from(await full.arrayBuffer());
      expect(bytes.equals(Buffer.from(await (await api.request(track.audio_url)).arrayBuffer()))).toBe(true);
      const part = await api.request(url, { user: null, headers: { Range: 'bytes=100-199' } });
      expect(part.status).toBe(206);
      expect(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(100, 200))).toBe(true);
      const head = await api.request(url, { user: null, method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(Number(head.headers.get('content-length'))).toBe(bytes.length);

      // The token is for that file only: not another track's audio, not as a bearer token,
      // not on an event stream or a read.
      const token = new URL(url, api.url).searchParams.get('playback_token')!;
      const refused = [
        await api.request(`${other.audio_url}?playback_token=${token}`, { user: null }),
        await api.request(`/v1/audio/batches/${batch.id}`, { user: null, headers: { Authorization: `Bearer ${token}` } }),
        await api.request(track.audio_url, { user: null, headers: { Authorization: `Bearer ${token}` } }),
        await api.request(`/v1/audio/batches/${batch.id}/events?access_token=${token}`, { user: null }),
        await api.request(`/v1/audio/batches/${batch.id}?playback_token=${token}`, { user: null }),
        await api.request(`${track.audio_url}?playback_token=${token}x`, { user: null }),
      ];
      expect(refused.map((r) => r.status)).toEqual([401, 401, 401, 401, 401, 401]);
      expect((await readJson(refused[0]!)).error.message).toBe('this playback token is for another audio file');
      // Nor does a stream token (or any other token) pass as a playback token.
      const stream = await readJson(await api.request('/v1/stream-tokens', { method: 'POST' }));
      expect((await api.request(`${track.audio_url}?playback_token=${stream.token}`, { user: null })).status).toBe(401);
    } finally {
      await worker.close();
    }
  });

  it('mints playback URLs only for audio URLs of the caller\'s own tracks and soundscapes', async () => {
    const mine = await createBatch(api, body('playback-private', 1), { user: 'owner' });
    const track = (await getBatch(api, mine.body.id, 'owner')).tracks[0];
    // No worker runs here: the track is pending, and its audio_url is still null.
    const audioUrl = `/v1/audio/tracks/${track.id}/audio`;
    const mint = (audio_url: unknown, user = 'owner') => api.request('/v1/playback-urls', { method: 'POST', user, json: { audio_url } });
    expect((await mint(audioUrl, 'intruder')).status).toBe(404);
    expect((await mint(`/v1/soundscapes/${track.id}/audio`)).status).toBe(404);
    expect((await mint(`/v1/audio/tracks/not-a-uuid/audio`)).status).toBe(404);
    for (const bad of [`/v1/audio/batches/${mine.body.id}`, `/v1/audio/tracks/${track.id}/audio?x=1`, '/etc/passwd', 42, null]) {
      const res = await mint(bad);
      expect(res.status, String(bad)).toBe(400);
      expect((await readJson(res)).error.code).toBe('validation_failed');
    }
    const extra = await api.request('/v1/playback-urls', { method: 'POST', user: 'owner', json: { audio_url: audioUrl, ttl: 99999 } });
    expect(extra.status).toBe(400);
    expect((await api.request('/v1/playback-urls', { method: 'POST', user: null, json: { audio_url: audioUrl } })).status).toBe(401);
    // Minting is allowed before the audio exists; playing then says it is not ready yet.
    const { url } = await readJson(await mint(audioUrl));
    const early = await api.request(url, { user: null });
    expect(early.status).toBe(409);
    expect((await readJson(early)).error.code).toBe('audio_not_ready');
  });

  it('lists the catalogs a UI renders', async () => {
    const variants = await readJson(await api.request('/v1/audio/variants'));
    expect(variants.variants.map((v: any) => v.id)).toEqual(expect.arrayContaining(['voice_only', 'sleep', 'energy', 'meditation']));
    const voices = await readJson(await api.request('/v1/audio/voices'));
    expect(voices.voices.map((v: any) => v.id)).toEqual(expect.arrayContaining(['alloy', 'nova', 'echo']));
  });
});
