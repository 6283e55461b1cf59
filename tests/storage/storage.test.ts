import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { ConfigError, loadConfig } from '@soundqueue/shared/config';
import { createLogger } from '@soundqueue/shared/logger';
import { createStorage, storageKeys, type Storage } from '@soundqueue/shared/storage/index';
import { createLocalStorage } from '@soundqueue/shared/storage/local';
import { createS3Storage, type S3Storage } from '@soundqueue/shared/storage/s3';
import { errorHandler } from '../../apps/api/src/http-errors';
import { sendStoredAudio } from '../../apps/api/src/send-audio';
import { makeMp3 } from '../fakes/http-server';
import { createTestEnv, type TestEnv } from '../helpers/services';
import { waitFor } from '../helpers/wait';

// s3rver (a fake S3 on the local disk) ships no types; this is the part of it the tests use.
interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverClass = new (options: {
  address: string;
  port: number;
  silent: boolean;
  directory: string;
  configureBuckets: { name: string }[];
}) => S3rverInstance;
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverClass;

const BUCKET = 'soundqueue-test';
// s3rver knows one account, S3RVER/S3RVER. It checks that a V4-signed request names a known
// key but does not verify the signature itself.
const S3_KEY = 'S3RVER';

let s3rver: S3rverInstance;
let s3Endpoint: string;
let s3rverDir: string;
let scratch: string;

beforeAll(async () => {
  s3rverDir = await mkdtemp(join(tmpdir(), 'sq-s3rver-'));
  scratch = await mkdtemp(join(tmpdir(), 'sq-storage-scratch-'));
  s3rver = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: s3rverDir, configureBuckets: [{ name: BUCKET }] });
  const address = await s3rver.run();
  s3Endpoint = `http://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  await s3rver?.close();
  await rm(s3rverDir, { recursive: true, force: true });
  await rm(scratch, { recursive: true, force: true });
});

const s3Options = (extra: { prefix?: string; maxSockets?: number; requestTimeoutMs?: number; endpoint?: string } = {}) => ({
  endpoint: s3Endpoint,
  region: 'us-east-1',
  bucket: BUCKET,
  accessKeyId: S3_KEY,
  secretAccessKey: S3_KEY,
  forcePathStyle: true,
  maxSockets: 50,
  connectionTimeoutMs: 5_000,
  requestTimeoutMs: 60_000,
  socketTimeoutMs: 120_000,
  ...extra,
});

// The API's routes pass AUDIO_IDLE_TIMEOUT_MS; these tests read every response at once.
const sendOptions = { idleTimeoutMs: 60_000 };

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks);
}

/** Bytes whose every position is recognisable, so a wrong range cannot pass by accident. */
function patterned(length: number): Buffer {
  const data = Buffer.alloc(length);
  for (let i = 0; i < length; i++) data[i] = (i * 7 + (i >> 8)) & 0xff;
  return data;
}

interface Driver {
  name: 'local' | 's3';
  make(): Promise<{ storage: Storage; cleanup(): Promise<void> }>;
}

const drivers: Driver[] = [
  {
    name: 'local',
    async make() {
      const dir = await mkdtemp(join(tmpdir(), 'sq-storage-local-'));
      return { storage: createLocalStorage(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
    },
  },
  {
    name: 's3',
    async make() {
      const storage = createS3Storage(s3Options());
      return { storage, cleanup: async () => storage.client.destroy() };
    },
  },
];

describe.each(drivers)('storage contract: $name driver', (driver) => {
  let storage: Storage;
  let cleanup: () => Promise<void>;
  let run: string;
  const sample = patterned(10_000);

  beforeAll(async () => {
    ({ storage, cleanup } = await driver.make());
    run = randomBytes(4).toString('hex');
  });
  afterAll(async () => {
    await cleanup?.();
  });

  const key = (name: string) => `contract/${run}/${name}`;

  it('reports its driver', () => {
    expect(storage.driver).toBe(driver.name);
  });

  it('moveFile stores a file and stat describes it (size, etag, modifiedAt)', async () => {
    const source = join(scratch, `${driver.name}-sample.bin`);
    await writeFile(source, sample);
    const before = Date.now();
    const stored = await storage.moveFile(key('sample.bin'), source, 'audio/mpeg');
    expect(stored.size).toBe(sample.length);
    expect(stored.etag).toMatch(/^"[^"]+"$/);
    expect(stored.modifiedAt).toBeInstanceOf(Date);
    // S3 keeps whole seconds.
    expect(Math.abs(stored.modifiedAt.getTime() - before)).toBeLessThan(60_000);

    const stat = await storage.stat(key('sample.bin'));
    expect(stat).toEqual(stored);
  });

  it('changes the etag when the bytes change', async () => {
    const first = await storage.put(key('changing.bin'), Buffer.from('first version'), 'audio/mpeg');
    const second = await storage.put(key('changing.bin'), Buffer.from('second version!'), 'audio/mpeg');
    expect(second.etag).not.toBe(first.etag);
    expect(second.size).toBe(15);
    expect(await storage.stat(key('changing.bin'))).toEqual(second);
  });

  it('reads a whole object as a Node Readable', async () => {
    const stream = await storage.read(key('sample.bin'));
    expect(stream).toBeInstanceOf(Readable);
    expect((await readAll(stream)).equals(sample)).toBe(true);
  });

  const ranges: Array<[string, number, number]> = [
    ['the first bytes', 0, 9],
    ['the first two bytes', 0, 1],
    ['the middle', 4000, 5999],
    ['the last byte', 9999, 9999],
  ];
  // s3rver 3.7.1 reads `bytes=0-0` as `bytes=0-` (`end || Infinity`) and sends everything;
  // real S3 and MinIO send one byte. A fake's bug, so only the local driver is held to it.
  if (driver.name === 'local') ranges.push(['the first byte alone', 0, 0]);
  it.each(ranges)('reads a byte range: %s', async (_label, start, end) => {
    const bytes = await readAll(await storage.read(key('sample.bin'), { start, end }));
    expect(bytes.length).toBe(end - start + 1);
    expect(bytes.equals(sample.subarray(start, end + 1))).toBe(true);
  });

  it('stat of a missing key is null; reading it or asking for its local file fails with ENOENT', async () => {
    expect(await storage.stat(key('missing.mp3'))).toBeNull();
    await expect((async () => readAll(await storage.read(key('missing.mp3'))))()).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(storage.localFile(key('missing.mp3'), join(scratch, `${driver.name}-missing-local.bin`))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('moveFile stores a file into a new directory and takes it away from the caller', async () => {
    const source = join(scratch, `${driver.name}-moved.bin`);
    await writeFile(source, sample);
    const stored = await storage.moveFile(key('fresh-dir/moved.bin'), source, 'audio/mpeg');
    expect(stored.size).toBe(sample.length);
    expect(await storage.stat(key('fresh-dir/moved.bin'))).toEqual(stored);
    expect((await readAll(await storage.read(key('fresh-dir/moved.bin')))).equals(sample)).toBe(true);
    await expect(stat(source)).rejects.toMatchObject({ code: 'ENOENT' });
    // A missing source is an error, not an empty object.
    await expect(storage.moveFile(key('fresh-dir/never.bin'), source, 'audio/mpeg')).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await storage.stat(key('fresh-dir/never.bin'))).toBeNull();
  });

  it('moveFile replaces an object whole, and a reader of the old file keeps the old bytes', async () => {
    await storage.put(key('replaced.bin'), Buffer.from('old bytes'), 'audio/mpeg');
    const old = await storage.localFile(key('replaced.bin'), join(scratch, `${driver.name}-replaced-old.bin`));
    const reading = await open(old, 'r');
    try {
      const source = join(scratch, `${driver.name}-replacement.bin`);
      await writeFile(source, 'the new bytes');
      await storage.moveFile(key('replaced.bin'), source, 'audio/mpeg');
      expect((await readAll(await storage.read(key('replaced.bin')))).toString()).toBe('the new bytes');
      expect((await reading.readFile()).toString()).toBe('old bytes');
    } finally {
      await reading.close();
    }
  });

  it('localFile is a local file with the object\'s bytes: the stored file (local) or a download to the scratch path (S3)', async () => {
    const scratchPath = join(scratch, `${driver.name}-local-file.bin`);
    const path = await storage.localFile(key('sample.bin'), scratchPath);
    expect((await readFile(path)).equals(sample)).toBe(true);
    if (driver.name === 'local') {
      expect(path).not.toBe(scratchPath);
      await expect(stat(scratchPath)).rejects.toMatchObject({ code: 'ENOENT' });
    } else {
      expect(path).toBe(scratchPath);
    }
  });

  it('deletes an object; deleting a missing one is fine', async () => {
    await storage.put(key('doomed.bin'), Buffer.from('bye'), 'audio/mpeg');
    expect(await storage.stat(key('doomed.bin'))).not.toBeNull();
    await storage.delete(key('doomed.bin'));
    expect(await storage.stat(key('doomed.bin'))).toBeNull();
    await expect(storage.delete(key('doomed.bin'))).resolves.toBeUndefined();
  });

  it('lists every key under a folder, and none for a folder with nothing in it', async () => {
    // What a batch's end reads to find the mixes no track row names (removeUnnamedTrackFiles).
    await storage.put(key('listed/a.mp3'), Buffer.from('a'), 'audio/mpeg');
    await storage.put(key('listed/b.mp3'), Buffer.from('b'), 'audio/mpeg');
    await storage.put(key('listed/deeper/c.mp3'), Buffer.from('c'), 'audio/mpeg');
    // A sibling whose name starts like the folder is not in it.
    await storage.put(key('listed-not/d.mp3'), Buffer.from('d'), 'audio/mpeg');
    expect((await storage.list(key('listed/'))).sort()).toEqual([key('listed/a.mp3'), key('listed/b.mp3'), key('listed/deeper/c.mp3')]);
    await storage.delete(key('listed/b.mp3'));
    expect((await storage.list(key('listed/'))).sort()).toEqual([key('listed/a.mp3'), key('listed/deeper/c.mp3')]);
    expect(await storage.list(key('nothing-here/'))).toEqual([]);
    await expect((async () => storage.list('../x/'))()).rejects.toThrow(/unsafe storage key/);
  });

  it('lists every object under a folder with the time it was stored, for the storage sweep', async () => {
    const before = Date.now() - 2_000;
    await storage.put(key('aged/a.mp3'), Buffer.from('a'), 'audio/mpeg');
    await storage.put(key('aged/deeper/b.mp3'), Buffer.from('b'), 'audio/mpeg');
    const entries = (await storage.entries(key('aged/'))).sort((x, y) => x.key.localeCompare(y.key));
    expect(entries.map((e) => e.key)).toEqual([key('aged/a.mp3'), key('aged/deeper/b.mp3')]);
    for (const entry of entries) {
      expect(entry.modifiedAt.getTime()).toBeGreaterThanOrEqual(before);
      expect(entry.modifiedAt.getTime()).toBeLessThanOrEqual(Date.now() + 2_000);
      expect(entry.temporary).toBe(false);
      expect(entry.modifiedAt.getTime()).toBe((await storage.stat(entry.key))!.modifiedAt.getTime());
    }
    expect(await storage.entries(key('nothing-aged/'))).toEqual([]);
  });

  it.each(['../x', '/abs', 'a/../../b', 'a/./b', '', 'a//b', 'a\\b'])('rejects the unsafe key %j in every operation', async (bad) => {
    const source = join(scratch, `${driver.name}-unsafe.bin`);
    await writeFile(source, 'x');
    const attempts: Array<() => Promise<unknown>> = [
      () => storage.put(bad, Buffer.from('x'), 'audio/mpeg'),
      () => storage.stat(bad),
      () => storage.read(bad),
      () => storage.read(bad, { start: 0, end: 0 }),
      () => storage.localFile(bad, join(scratch, 'unsafe-out.bin')),
      () => storage.moveFile(bad, source, 'audio/mpeg'),
      () => storage.delete(bad),
    ];
    for (const attempt of attempts) {
      // async wrapper: a driver may throw synchronously or reject; both count as refusing.
      await expect((async () => attempt())()).rejects.toThrow(/unsafe storage key/);
    }
  });

  it('round-trips a 5 MB file through moveFile, read and localFile (by hash)', async () => {
    // One byte over 5 MiB: more than one part for S3's multipart upload.
    const big = randomBytes(5 * 1024 * 1024 + 1);
    const source = join(scratch, `${driver.name}-big.bin`);
    await writeFile(source, big);
    const stored = await storage.moveFile(key('big.bin'), source, 'audio/mpeg');
    expect(stored.size).toBe(big.length);
    expect(await storage.stat(key('big.bin'))).toEqual(stored);
    expect(sha256(await readAll(await storage.read(key('big.bin'))))).toBe(sha256(big));
    const local = await storage.localFile(key('big.bin'), join(scratch, `${driver.name}-big-local.bin`));
    expect(sha256(await readFile(local))).toBe(sha256(big));
    const tail = await readAll(await storage.read(key('big.bin'), { start: big.length - 100, end: big.length - 1 }));
    expect(tail.equals(big.subarray(big.length - 100))).toBe(true);
    await storage.delete(key('big.bin'));
  });
});

// Scratch on tmpfs, storage on the disk: rename cannot cross them (EXDEV), so moveFile copies.
const sharedMemory = '/dev/shm';
const crossDevice = existsSync(sharedMemory) && statSync(sharedMemory).dev !== statSync(tmpdir()).dev;

describe('local driver specifics', () => {
  it.skipIf(!crossDevice)('moveFile across file systems copies the file into place and removes the source', async () => {
    const root = await mkdtemp(join(tmpdir(), 'sq-storage-xdev-'));
    const otherScratch = await mkdtemp(join(sharedMemory, 'sq-storage-xdev-'));
    try {
      const storage = createLocalStorage(root);
      const source = join(otherScratch, 'voice.bin');
      const bytes = patterned(70_000);
      await writeFile(source, bytes);
      const stored = await storage.moveFile('renditions/ab/voice.bin', source, 'audio/wav');
      expect(stored.size).toBe(bytes.length);
      expect((await readFile(join(root, 'renditions/ab/voice.bin'))).equals(bytes)).toBe(true);
      await expect(stat(source)).rejects.toMatchObject({ code: 'ENOENT' });
      // No temp file is left beside the object.
      expect(await readdir(join(root, 'renditions/ab'))).toEqual(['voice.bin']);
    } finally {
      await rm(root, { recursive: true, force: true });
      await rm(otherScratch, { recursive: true, force: true });
    }
  });
});

describe('local driver listing', () => {
  it('leaves out the temporary file of a write in progress', async () => {
    const root = await mkdtemp(join(tmpdir(), 'sq-storage-list-'));
    try {
      const storage = createLocalStorage(root);
      await storage.put('tracks/b1/t1.m1.mp3', Buffer.from('stored'), 'audio/mpeg');
      // A put, or a move across file systems, writes here and then renames it into place.
      await writeFile(join(root, 'tracks/b1/t2.m2.mp3.0b8a4c1e-6f2d-4a51-9d7e-3c2b1a0f9e8d.tmp'), 'half');
      expect(await storage.list('tracks/b1/')).toEqual(['tracks/b1/t1.m1.mp3']);
      // The sweep sees it, marked: a write whose worker was killed leaves it for ever.
      expect((await storage.entries('tracks/b1/')).map((e) => [e.key, e.temporary]).sort()).toEqual([
        ['tracks/b1/t1.m1.mp3', false],
        ['tracks/b1/t2.m2.mp3.0b8a4c1e-6f2d-4a51-9d7e-3c2b1a0f9e8d.tmp', true],
      ]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('s3 driver specifics', () => {
  let a: S3Storage;
  let b: S3Storage;

  beforeAll(() => {
    a = createS3Storage(s3Options({ prefix: 'tenant-a/' }));
    b = createS3Storage(s3Options({ prefix: 'tenant-a' }));
  });
  afterAll(() => {
    a?.client.destroy();
    b?.client.destroy();
  });

  it('stores keys under the prefix, with the content type, visible to another instance (another machine)', async () => {
    const stored = await a.put('tracks/b1/t1.mp3', Buffer.from('shared bytes'), 'audio/mpeg');
    const head = await a.client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'tenant-a/tracks/b1/t1.mp3' }));
    expect(head.ContentType).toBe('audio/mpeg');
    expect(head.ETag).toBe(stored.etag);
    expect(await b.stat('tracks/b1/t1.mp3')).toEqual(stored);
    expect((await readAll(await b.read('tracks/b1/t1.mp3'))).toString()).toBe('shared bytes');
    const listed = await a.client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'tenant-a/' }));
    expect(listed.Contents?.map((o) => o.Key)).toEqual(['tenant-a/tracks/b1/t1.mp3']);
  });

  it('lists keys without the prefix; a store with no prefix set shows the deployment folder in them', async () => {
    await a.put('tracks/b2/t1.m1.mp3', Buffer.from('x'), 'audio/mpeg');
    await a.put('tracks/b2/t2.m2.mp3', Buffer.from('x'), 'audio/mpeg');
    expect((await b.list('tracks/b2/')).sort()).toEqual(['tracks/b2/t1.m1.mp3', 'tracks/b2/t2.m2.mp3']);
    const plain = createS3Storage(s3Options());
    try {
      expect(await plain.list('tenant-a/tracks/b1/')).toEqual(['tenant-a/tracks/b1/t1.mp3']);
    } finally {
      plain.client.destroy();
    }
  });

  // S3 answers at most 1,000 keys a request. s3rver cannot page a V2 listing here (its
  // continuation token is DES, which OpenSSL 3 no longer offers), so this is a server that
  // speaks ListObjectsV2's wire format: two pages, the second asked for by the first's token.
  it('lists every page of a listing that S3 answers in pages', async () => {
    const asked: Array<Record<string, unknown>> = [];
    const pageOf = (keys: string[], next?: string) =>
      `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${BUCKET}</Name><Prefix>tenant-a/tracks/b3/</Prefix><KeyCount>${keys.length}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>${next ? 'true' : 'false'}</IsTruncated>${keys
        .map((k) => `<Contents><Key>${k}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"e"</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>`)
        .join('')}${next ? `<NextContinuationToken>${next}</NextContinuationToken>` : ''}</ListBucketResult>`;
    const app = express();
    app.get(`/${BUCKET}`, (req, res) => {
      asked.push({ ...req.query });
      res.type('application/xml');
      if (req.query['continuation-token'] === 'page/2+') res.send(pageOf(['tenant-a/tracks/b3/t3.mp3']));
      else res.send(pageOf(['tenant-a/tracks/b3/t1.mp3', 'tenant-a/tracks/b3/t2.mp3'], 'page/2+'));
    });
    const server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const paged = createS3Storage(s3Options({ prefix: 'tenant-a', endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }));
    try {
      expect(await paged.list('tracks/b3/')).toEqual(['tracks/b3/t1.mp3', 'tracks/b3/t2.mp3', 'tracks/b3/t3.mp3']);
      expect(asked.map((q) => [q['list-type'], q.prefix, q['continuation-token']])).toEqual([
        ['2', 'tenant-a/tracks/b3/', undefined],
        ['2', 'tenant-a/tracks/b3/', 'page/2+'],
      ]);
    } finally {
      paged.client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('refuses an unsafe prefix and half a set of credentials', () => {
    expect(() => createS3Storage(s3Options({ prefix: '../escape' }))).toThrow(/unsafe storage key/);
    expect(() => createS3Storage({ ...s3Options(), secretAccessKey: undefined })).toThrow(/both accessKeyId and secretAccessKey/);
  });

  it('refuses a malformed range instead of asking S3 for it', async () => {
    await expect(a.read('tracks/b1/t1.mp3', { start: 5, end: 2 })).rejects.toThrow(RangeError);
    await expect(a.read('tracks/b1/t1.mp3', { start: -1, end: 2 })).rejects.toThrow(RangeError);
  });

  it('a missing bucket is a failure, not a missing object', async () => {
    // As ENOENT, a mix job took a rendition's file for gone: it dropped the rendition and paid
    // the provider to voice it again, on every attempt, the upload then failing the same way.
    const wrong = createS3Storage({ ...s3Options(), bucket: 'no-such-bucket' });
    try {
      const failure = (p: Promise<unknown>) => p.then(() => expect.fail('should have failed'), (e: unknown) => e as NodeJS.ErrnoException);
      for (const error of [await failure(wrong.localFile('renditions/ab/abc.mp3', join(scratch, 'wrong-bucket.mp3'))), await failure(wrong.read('tracks/b1/t1.mp3'))]) {
        expect(error.code).not.toBe('ENOENT');
        expect(error.name).toBe('NoSuchBucket');
      }
      expect(existsSync(join(scratch, 'wrong-bucket.mp3'))).toBe(false);
    } finally {
      wrong.client.destroy();
    }
  });

  it('moveFile stores exactly the bytes of the file (read back raw through the SDK)', async () => {
    const source = join(scratch, 'framing.bin');
    await writeFile(source, 'exactly these bytes');
    await a.moveFile('framing.bin', source, 'application/octet-stream');
    const raw = await a.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'tenant-a/framing.bin' }));
    expect(await raw.Body?.transformToString()).toBe('exactly these bytes');
  });
});

describe('storage config', () => {
  it('defaults to the local driver', () => {
    const config = loadConfig({});
    expect(config.STORAGE_DRIVER).toBe('local');
    expect(config.S3_REGION).toBe('us-east-1');
    expect(config.S3_FORCE_PATH_STYLE).toBe(false);
    expect(createStorage(config).driver).toBe('local');
  });

  it('sizes the S3 pool for streaming players, and keeps its idle timeout longer than the audio one', () => {
    const config = loadConfig({});
    expect(config.S3_MAX_SOCKETS).toBe(256);
    expect(config.AUDIO_IDLE_TIMEOUT_MS).toBe(60_000);
    expect(config.S3_SOCKET_TIMEOUT_MS).toBeGreaterThan(config.AUDIO_IDLE_TIMEOUT_MS);
    // Else a paused player's stream would be cut as an S3 failure before the API ends it.
    const s3 = { STORAGE_DRIVER: 's3', S3_BUCKET: 'b' };
    expect(() => loadConfig({ ...s3, AUDIO_IDLE_TIMEOUT_MS: '120000' })).toThrow(/S3_SOCKET_TIMEOUT_MS must be longer than AUDIO_IDLE_TIMEOUT_MS/);
    // Local storage holds no socket for a paused player: any idle timeout is fine there.
    expect(loadConfig({ AUDIO_IDLE_TIMEOUT_MS: '120000' }).AUDIO_IDLE_TIMEOUT_MS).toBe(120_000);
  });

  it('uses path-style by default only when S3_ENDPOINT is set', () => {
    expect(loadConfig({ STORAGE_DRIVER: 's3', S3_BUCKET: 'b', S3_ENDPOINT: 'http://127.0.0.1:9000' }).S3_FORCE_PATH_STYLE).toBe(true);
    expect(loadConfig({ STORAGE_DRIVER: 's3', S3_BUCKET: 'b' }).S3_FORCE_PATH_STYLE).toBe(false);
    expect(loadConfig({ STORAGE_DRIVER: 's3', S3_BUCKET: 'b', S3_ENDPOINT: 'http://minio:9000', S3_FORCE_PATH_STYLE: 'false' }).S3_FORCE_PATH_STYLE).toBe(false);
  });

  it('explains what an s3 setup is missing', () => {
    let error: unknown;
    try {
      loadConfig({ STORAGE_DRIVER: 's3', S3_ACCESS_KEY_ID: 'id', S3_ENDPOINT: 'not a url', S3_PREFIX: '../up' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    expect(problems).toContain('S3_ENDPOINT must be an http(s) URL');
    expect(() => loadConfig({ STORAGE_DRIVER: 's3' })).toThrow(/STORAGE_DRIVER=s3 needs S3_BUCKET/);
    expect(() => loadConfig({ STORAGE_DRIVER: 's3', S3_BUCKET: 'b', S3_ACCESS_KEY_ID: 'id' })).toThrow(
      /S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together/,
    );
    expect(() => loadConfig({ STORAGE_DRIVER: 's3', S3_BUCKET: 'b', S3_PREFIX: '../up' })).toThrow(/S3_PREFIX must be a relative path/);
    expect(() => loadConfig({ STORAGE_DRIVER: 'ftp' })).toThrow(/STORAGE_DRIVER must be local or s3/);
  });
});

describe('API serving an S3-stored file', () => {
  let env: TestEnv;
  let storage: S3Storage;
  let server: ReturnType<ReturnType<typeof express>['listen']>;
  let url: string;
  let mp3: Buffer;
  const getRanges: Array<string | undefined> = [];
  const key = storageKeys.track('batch-e2e', 'track-1', 'mix-1');

  beforeAll(async () => {
    env = await createTestEnv({
      STORAGE_DRIVER: 's3',
      S3_ENDPOINT: s3Endpoint,
      S3_BUCKET: BUCKET,
      S3_ACCESS_KEY_ID: S3_KEY,
      S3_SECRET_ACCESS_KEY: S3_KEY,
    });
    const created = createStorage(env.config);
    expect(created.driver).toBe('s3');
    storage = created as S3Storage;
    // Records the Range header of every GetObject the driver sends, as it goes on the wire.
    storage.client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'GetObjectCommand') {
          getRanges.push((args.request as { headers: Record<string, string> }).headers.range);
        }
        return next(args);
      },
      { step: 'finalizeRequest', name: 'recordGetObjectRange' },
    );

    mp3 = await makeMp3(3);
    const source = join(scratch, 'e2e.mp3');
    await writeFile(source, mp3);
    await storage.moveFile(key, source, 'audio/mpeg');

    const app = express();
    app.get('/audio', async (req, res) => {
      await sendStoredAudio(req, res, storage, key, 'track-1.mp3', sendOptions);
    });
    app.get('/missing', async (req, res) => {
      await sendStoredAudio(req, res, storage, storageKeys.track('batch-e2e', 'nope', 'mix-1'), 'nope.mp3', sendOptions);
    });
    app.use(errorHandler(createLogger('storage-test', { LOG_LEVEL: 'silent' })));
    server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    storage?.client.destroy();
    await env?.cleanup();
  });

  it('answers a Range request with 206, Content-Range and exactly those bytes, fetched as a range from S3', async () => {
    getRanges.length = 0;
    const res = await fetch(`${url}/audio`, { headers: { Range: 'bytes=100-1099' } });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes 100-1099/${mp3.length}`);
    expect(res.headers.get('content-length')).toBe('1000');
    expect(res.headers.get('content-type')).toBe('audio/mpeg');
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    const body = Buffer.from(await res.arrayBuffer());
    expect(body.equals(mp3.subarray(100, 1100))).toBe(true);
    expect(getRanges).toEqual(['bytes=100-1099']);
  });

  it('serves an open-ended and a suffix range, and the whole file without Range', async () => {
    const open = await fetch(`${url}/audio`, { headers: { Range: `bytes=${mp3.length - 10}-` } });
    expect(open.status).toBe(206);
    expect(Buffer.from(await open.arrayBuffer()).equals(mp3.subarray(mp3.length - 10))).toBe(true);

    const suffix = await fetch(`${url}/audio`, { headers: { Range: 'bytes=-1' } });
    expect(suffix.status).toBe(206);
    expect(suffix.headers.get('content-range')).toBe(`bytes ${mp3.length - 1}-${mp3.length - 1}/${mp3.length}`);
    expect(Buffer.from(await suffix.arrayBuffer()).equals(mp3.subarray(mp3.length - 1))).toBe(true);

    const whole = await fetch(`${url}/audio`);
    expect(whole.status).toBe(200);
    expect(whole.headers.get('content-length')).toBe(String(mp3.length));
    expect(sha256(Buffer.from(await whole.arrayBuffer()))).toBe(sha256(mp3));
  });

  it('uses the S3 ETag for conditional requests, and answers 416 and 404', async () => {
    const stat = await storage.stat(key);
    const first = await fetch(`${url}/audio`, { method: 'HEAD' });
    expect(first.headers.get('etag')).toBe(stat?.etag);
    const notModified = await fetch(`${url}/audio`, { headers: { 'If-None-Match': stat!.etag } });
    expect(notModified.status).toBe(304);

    const unsatisfiable = await fetch(`${url}/audio`, { headers: { Range: `bytes=${mp3.length}-` } });
    expect(unsatisfiable.status).toBe(416);
    expect(unsatisfiable.headers.get('content-range')).toBe(`bytes */${mp3.length}`);

    const missing = await fetch(`${url}/missing`);
    expect(missing.status).toBe(404);
  });
});

describe.each(drivers)('serving stored audio, edge cases: $name driver', (driver) => {
  let made: { storage: Storage; cleanup(): Promise<void> };
  let server: ReturnType<ReturnType<typeof express>['listen']>;
  let url: string;
  const data = patterned(5_000);
  const key = storageKeys.track('batch-edge', 'track-1', 'mix-1');
  const gone = storageKeys.track('batch-edge', 'deleted-after-stat', 'mix-1');

  beforeAll(async () => {
    made = await driver.make();
    await made.storage.put(key, data, 'audio/mpeg');
    await made.storage.put(gone, data, 'audio/mpeg');
    // The object is deleted between the API's stat and its read: a player asking for a file
    // at the moment a newer version replaces it, or a retention job removes it.
    const vanishing: Storage = {
      ...made.storage,
      async stat(k) {
        const object = await made.storage.stat(k);
        await made.storage.delete(k);
        return object;
      },
    };
    const app = express();
    app.get('/audio', async (req, res) => sendStoredAudio(req, res, made.storage, key, 'track-1.mp3', sendOptions));
    app.get('/vanishing', async (req, res) => sendStoredAudio(req, res, vanishing, gone, 'gone.mp3', sendOptions));
    app.use(errorHandler(createLogger('storage-test', { LOG_LEVEL: 'silent' })));
    server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    await made?.cleanup();
  });

  it('answers a file deleted after its stat with a plain JSON 404, none of the audio headers', async () => {
    // Before: a 500 (S3) or a connection cut after the headers (local), dressed as audio.
    const res = await fetch(`${url}/vanishing`);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: { code: 'not_found' } });
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    for (const header of ['cache-control', 'content-disposition', 'content-range', 'last-modified']) expect(res.headers.get(header), header).toBeNull();
    // Express tags its JSON body weakly; the audio's strong tag is not there.
    expect(res.headers.get('etag') ?? 'W/').toMatch(/^W\//);
  });

  it('serves the whole file for a range whose end is before its start, as RFC 9110 asks', async () => {
    const res = await fetch(`${url}/audio`, { headers: { Range: 'bytes=500-20' } });
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(data)).toBe(true);
    // A start past the end is still unsatisfiable.
    expect((await fetch(`${url}/audio`, { headers: { Range: 'bytes=5000-6000' } })).status).toBe(416);
  });

  it('answers 304 to If-None-Match with the weak form of the tag, a list holding it, or *', async () => {
    const etag = (await fetch(`${url}/audio`, { method: 'HEAD' })).headers.get('etag')!;
    expect(etag).toMatch(/^"/);
    for (const header of [`W/${etag}`, `"other", ${etag}`, '*']) {
      const res = await fetch(`${url}/audio`, { headers: { 'If-None-Match': header } });
      expect(res.status, header).toBe(304);
      expect(res.headers.get('etag'), header).toBe(etag);
    }
    expect((await fetch(`${url}/audio`, { headers: { 'If-None-Match': '"other", W/"another"' } })).status).toBe(200);
  });
});

describe('S3 connections: paused players and a store that does not answer', () => {
  let storage: S3Storage;
  let server: ReturnType<ReturnType<typeof express>['listen']>;
  let url: string;
  let idleTimeoutMs: number;
  /** Responses of the long track the server closed before their last byte. */
  let cutOff = 0;
  const big = storageKeys.track('batch-paused', 'long-track', 'mix-1');
  const small = storageKeys.track('batch-paused', 'short-track', 'mix-1');
  const smallData = patterned(20_000);
  // Larger than every buffer between s3rver and a client that stopped reading (socket buffers
  // on both hops, streams' high-water marks), so a paused response keeps its S3 socket busy.
  const bigSize = 48 * 1024 * 1024;

  beforeAll(async () => {
    const config = loadConfig({
      STORAGE_DRIVER: 's3',
      S3_ENDPOINT: s3Endpoint,
      S3_BUCKET: BUCKET,
      S3_ACCESS_KEY_ID: S3_KEY,
      S3_SECRET_ACCESS_KEY: S3_KEY,
      // A pool this small is exhausted by two paused players, as 50 were by default before.
      S3_MAX_SOCKETS: '2',
      AUDIO_IDLE_TIMEOUT_MS: '1000',
    });
    idleTimeoutMs = config.AUDIO_IDLE_TIMEOUT_MS;
    storage = createStorage(config) as S3Storage;
    await storage.put(big, randomBytes(bigSize), 'audio/mpeg');
    await storage.put(small, smallData, 'audio/mpeg');
    const app = express();
    app.get('/audio/:name', async (req, res) => {
      const key = req.params.name === 'long' ? big : small;
      if (key === big) res.on('close', () => !res.writableFinished && cutOff++);
      await sendStoredAudio(req, res, storage, key, `${req.params.name}.mp3`, { idleTimeoutMs });
    });
    app.use(errorHandler(createLogger('storage-test', { LOG_LEVEL: 'silent' })));
    server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server?.closeAllConnections();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    storage?.client.destroy();
  });

  /** A player that asks for the long track, takes its first bytes and then stops reading. */
  async function pausedPlayer() {
    const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
    let received = 0;
    socket.write(`GET /audio/long HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    const [first] = (await once(socket, 'data')) as [Buffer];
    received += first.length;
    socket.pause();
    expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
    return {
      /** Reads what the server sent until it closed the connection; the byte count. */
      async drain(): Promise<number> {
        socket.on('data', (chunk: Buffer) => (received += chunk.length));
        socket.on('error', () => {});
        socket.resume();
        await once(socket, 'close');
        return received;
      },
    };
  }

  it('ends a response whose player stopped reading, so later requests still get a socket and their audio', { timeout: 120_000 }, async () => {
    const players = [await pausedPlayer(), await pausedPlayer()];
    // Each paused response holds one of the pool's two sockets until it is ended. Before, the
    // stat and read below waited for a socket for ever.
    const res = await fetch(`${url}/audio/short`, { signal: AbortSignal.timeout(60_000) });
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(smallData)).toBe(true);
    // The paused responses were ended mid-file (a player resumes with a Range request).
    await waitFor(() => cutOff === players.length, { timeoutMs: 60_000, what: 'the paused responses to be ended' });
    for (const player of players) expect(await player.drain()).toBeLessThan(bigSize);
  });

  it('fails a request to a store that accepts connections but never answers, instead of waiting for ever', { timeout: 60_000 }, async () => {
    const silent = createNetServer(() => {});
    const held = new Set<Socket>();
    silent.on('connection', (socket) => held.add(socket));
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const stuck = createS3Storage(s3Options({ endpoint: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, requestTimeoutMs: 300 }));
    try {
      await expect(stuck.stat('tracks/b/t.mp3')).rejects.toMatchObject({ name: 'TimeoutError' });
    } finally {
      stuck.client.destroy();
      for (const socket of held) socket.destroy();
      silent.close();
    }
  });
});
