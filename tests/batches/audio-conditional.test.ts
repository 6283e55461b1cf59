import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, startTestWorker, type TestApi } from '../helpers/app';
import { createBatch, sampleSections, waitForTerminal } from '../helpers/batches';
import { createTestEnv, queryRows, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// An audio file's conditional requests and ranges as RFC 9110 has a server answer them
// (sections 13 and 14), against one finished track served from local storage.

let env: TestEnv;
let api: TestApi;
let url: string;
/** A second track, whose stored file a test empties. */
let spare: { url: string; id: string };
let bytes: Buffer;
let etag: string;
let lastModified: string;

beforeAll(async () => {
  env = await createTestEnv();
  api = await startTestApi(env.config);
  const worker = await startTestWorker(env.config);
  try {
    const created = await createBatch(api, { visionId: 'conditional', sections: sampleSections(2, 'conditional'), variants: ['voice_only'], voice: 'alloy' });
    const batch = await waitForTerminal(api, created.body.id);
    expect(batch.status).toBe('completed');
    url = batch.tracks[0].audio_url;
    spare = { url: batch.tracks[1].audio_url, id: batch.tracks[1].id };
  } finally {
    await worker.close();
  }
  const full = await api.request(url);
  bytes = Buffer.from(await full.arrayBuffer());
  etag = full.headers.get('etag')!;
  lastModified = full.headers.get('last-modified')!;
}, 180_000);
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

const get = (headers: Record<string, string>, method = 'GET') => api.request(url, { method, headers });
const httpDate = (ms: number) => new Date(ms).toUTCString();

describe('audio preconditions', () => {
  it('answers 412 when If-Match names another entity tag, and serves the file when it holds', async () => {
    const failed = await get({ 'If-Match': '"not-this-one"' });
    expect(failed.status).toBe(412);
    expect((await readJson(failed)).error.code).toBe('precondition_failed');
    // If-Match compares strongly: a weak tag never matches.
    expect((await get({ 'If-Match': `W/${etag}` })).status).toBe(412);
    for (const holds of [etag, '*', `"other", ${etag}`]) {
      const res = await get({ 'If-Match': holds });
      expect(res.status, holds).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);
    }
    // A range behind a holding If-Match is served as usual.
    expect((await get({ 'If-Match': etag, Range: 'bytes=0-9' })).status).toBe(206);
  });

  it('answers 412 when If-Unmodified-Since is before the file was stored (and If-Match, when sent, decides instead)', async () => {
    const before = httpDate(Date.parse(lastModified) - 60_000);
    const res = await get({ 'If-Unmodified-Since': before });
    expect(res.status).toBe(412);
    expect((await readJson(res)).error.code).toBe('precondition_failed');
    expect((await get({ 'If-Unmodified-Since': lastModified })).status).toBe(200);
    expect((await get({ 'If-Match': etag, 'If-Unmodified-Since': before })).status).toBe(200);
    // Not a date: ignored.
    expect((await get({ 'If-Unmodified-Since': 'yesterday' })).status).toBe(200);
  });

  it('answers 304 to If-Modified-Since at or after Last-Modified, unless If-None-Match is sent', async () => {
    // Last-Modified itself, now, and Last-Modified in the two obsolete forms a server must read.
    const [, wd, day, month, year, clock] = /^(\w{3}), (\d{2}) (\w{3}) (\d{4}) (\S+) GMT$/.exec(lastModified)!;
    const weekday = { Mon: 'Monday', Tue: 'Tuesday', Wed: 'Wednesday', Thu: 'Thursday', Fri: 'Friday', Sat: 'Saturday', Sun: 'Sunday' }[wd!];
    const rfc850 = `${weekday}, ${day}-${month}-${year!.slice(2)} ${clock} GMT`;
    const asctime = `${wd} ${month} ${day!.replace(/^0/, ' ')} ${clock} ${year}`;
    for (const since of [lastModified, httpDate(Date.now()), rfc850, asctime]) {
      const res = await get({ 'If-Modified-Since': since });
      expect(res.status, since).toBe(304);
      expect(res.headers.get('etag')).toBe(etag);
    }
    expect((await get({ 'If-Modified-Since': httpDate(Date.parse(lastModified) - 60_000) })).status).toBe(200);
    expect((await get({ 'If-Modified-Since': 'not a date' })).status).toBe(200);
    // If-None-Match wins: a tag that does not match means the file is sent, whatever the date.
    expect((await get({ 'If-None-Match': '"old"', 'If-Modified-Since': lastModified })).status).toBe(200);
  });
});

describe('audio ranges', () => {
  it('reads the range unit case-insensitively', async () => {
    const res = await get({ Range: 'Bytes=0-9' });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes 0-9/${bytes.length}`);
    expect(Buffer.from(await res.arrayBuffer()).equals(bytes.subarray(0, 10))).toBe(true);
  });

  it('honours If-Range with the current strong entity tag only', async () => {
    expect((await get({ Range: 'bytes=0-9', 'If-Range': etag })).status).toBe(206);
    const weak = await get({ Range: 'bytes=0-9', 'If-Range': `W/${etag}` });
    expect(weak.status).toBe(200);
    expect(Buffer.from(await weak.arrayBuffer()).equals(bytes)).toBe(true);
  });

  it('honours If-Range with exactly the Last-Modified date, once that second is over (§13.1.5)', async () => {
    // A date is a strong validator only when the file cannot have changed again within the
    // second it names: the second must be over.
    await waitFor(() => Date.now() >= Date.parse(lastModified) + 1_000 || null, { what: "the file's second to be over" });
    const ranged = await get({ Range: 'bytes=0-9', 'If-Range': lastModified });
    expect(ranged.status).toBe(206);
    expect(Buffer.from(await ranged.arrayBuffer()).equals(bytes.subarray(0, 10))).toBe(true);
    for (const other of [httpDate(Date.parse(lastModified) - 1_000), httpDate(Date.parse(lastModified) + 1_000), 'yesterday']) {
      const whole = await get({ Range: 'bytes=0-9', 'If-Range': other });
      expect(whole.status, other).toBe(200);
      expect(Buffer.from(await whole.arrayBuffer()).equals(bytes)).toBe(true);
    }
  });
});

describe('audio ranges where RFC 9110 has none', () => {
  it('ignores Range on a HEAD: range handling is defined for GET only (§14.2)', async () => {
    const head = await get({ Range: 'bytes=0-9' }, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.headers.get('content-range')).toBeNull();
    expect(Number(head.headers.get('content-length'))).toBe(bytes.length);
    expect((await get({ Range: `bytes=${bytes.length}-` }, 'HEAD')).status).toBe(200);
    // A GET's range is served as ever.
    expect((await get({ Range: 'bytes=0-9' })).status).toBe(206);
  });

  it('serves an empty stored file whole for a suffix range, and refuses a first byte it does not have', async () => {
    const [row] = await queryRows<{ key: string }>(env.databaseUrl, 'select mixed_file_key as key from audio_tracks where id = $1', [spare.id]);
    await truncate(join(env.storageDir, row!.key), 0);
    const suffix = await api.request(spare.url, { headers: { Range: 'bytes=-5' } });
    expect(suffix.status).toBe(200);
    expect(suffix.headers.get('content-length')).toBe('0');
    expect((await suffix.arrayBuffer()).byteLength).toBe(0);
    const first = await api.request(spare.url, { headers: { Range: 'bytes=0-' } });
    expect(first.status).toBe(416);
    expect(first.headers.get('content-range')).toBe('bytes */0');
  });
});
