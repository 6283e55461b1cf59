import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { assertSafeFolder, assertSafeKey, type Storage, type StoredEntry, type StoredObject } from './types';

export interface S3StorageOptions {
  /** For S3-compatible stores (MinIO, R2, s3rver); unset means AWS. */
  endpoint?: string;
  region: string;
  bucket: string;
  /** Both or neither; neither means the SDK's default credential chain. */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** `endpoint/bucket/key` instead of `bucket.endpoint/key` (MinIO and s3rver need it). */
  forcePathStyle: boolean;
  /** Keys are stored under `<prefix>/`, so one bucket can hold several deployments. */
  prefix?: string;
  /**
   * Sockets open to the store at once. A streamed read holds its socket until its reader has
   * taken the last byte, so the API's audio responses in flight count against this; requests
   * beyond it wait for a socket.
   */
  maxSockets: number;
  /** How long to wait for a TCP connection to the store. */
  connectionTimeoutMs: number;
  /** How long to wait for a response's headers (an upload's includes sending its part). */
  requestTimeoutMs: number;
  /** A socket with no traffic for this long is closed, also mid-body: a stalled store fails. */
  socketTimeoutMs: number;
}

export interface S3Storage extends Storage {
  readonly driver: 's3';
  readonly bucket: string;
  readonly client: S3Client;
}

/** Objects in one S3 (or S3-compatible) bucket: workers on different machines share files. */
export function createS3Storage(options: S3StorageOptions): S3Storage {
  const { bucket } = options;
  const prefix = options.prefix?.replace(/^\/+|\/+$/g, '') || undefined;
  if (prefix !== undefined) assertSafeKey(prefix);
  if (Boolean(options.accessKeyId) !== Boolean(options.secretAccessKey)) {
    throw new Error('S3 storage needs both accessKeyId and secretAccessKey, or neither');
  }
  const client = new S3Client({
    region: options.region,
    endpoint: options.endpoint,
    forcePathStyle: options.forcePathStyle,
    // The SDK's default handler has 50 sockets and no timeouts: 50 paused players (each
    // response streaming from its own GetObject) would leave every other request of the
    // process waiting for a socket, for ever.
    requestHandler: new NodeHttpHandler({
      httpAgent: { keepAlive: true, maxSockets: options.maxSockets },
      httpsAgent: { keepAlive: true, maxSockets: options.maxSockets },
      connectionTimeout: options.connectionTimeoutMs,
      requestTimeout: options.requestTimeoutMs,
      // Without it, requestTimeout only logs a warning.
      throwOnRequestTimeout: true,
      socketTimeout: options.socketTimeoutMs,
    }),
    credentials:
      options.accessKeyId && options.secretAccessKey
        ? { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey }
        : undefined,
    // Since 3.729 the SDK adds CRC32 checksum headers to every upload and validates them on
    // download (aws/aws-sdk-js-v3#6810). R2, B2 and older MinIO reject those headers, and a
    // streamed body goes out `aws-chunked`, which s3rver stores framing and all. Off AWS,
    // only send the checksums an operation requires.
    requestChecksumCalculation: options.endpoint ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
    responseChecksumValidation: options.endpoint ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
  });

  const objectKey = (key: string) => {
    assertSafeKey(key);
    return prefix ? `${prefix}/${key}` : key;
  };

  const head = async (key: string): Promise<StoredObject | null> => {
    try {
      const out = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey(key) }));
      return {
        size: out.ContentLength ?? 0,
        etag: quoted(out.ETag ?? ''),
        modifiedAt: out.LastModified ?? new Date(0),
      };
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  };

  // The stored description comes from HeadObject, so it is exactly what stat() (and thus the
  // API's ETag / Last-Modified) will say about the object later.
  const described = async (key: string): Promise<StoredObject> => {
    const object = await head(key);
    if (!object) throw new Error(`storage object ${JSON.stringify(key)} vanished right after it was written`);
    return object;
  };

  const get = async (key: string, range?: { start: number; end: number }): Promise<Readable> => {
    if (range && !(Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end) && range.start >= 0 && range.end >= range.start)) {
      throw new RangeError(`invalid byte range ${range.start}-${range.end}`);
    }
    let out: GetObjectCommandOutput;
    try {
      out = await client.send(
        new GetObjectCommand({ Bucket: bucket, Key: objectKey(key), Range: range ? `bytes=${range.start}-${range.end}` : undefined }),
      );
    } catch (error) {
      if (isNotFound(error)) throw notFoundError(key, error);
      throw error;
    }
    return toReadable(out.Body, key);
  };

  const upload = async (key: string, path: string, contentType: string): Promise<StoredObject> => {
    // Upload streams the file in 5 MiB parts (multipart above one part, a single PutObject
    // otherwise) and keeps each part in memory, so a failed request can be retried.
    // S3 objects appear whole or not at all, like the local driver's rename.
    await new Upload({
      client,
      params: { Bucket: bucket, Key: objectKey(key), Body: createReadStream(path), ContentType: contentType },
    }).done();
    return described(key);
  };

  const download = async (key: string, path: string): Promise<void> => {
    const body = await get(key);
    try {
      await pipeline(body, createWriteStream(path));
    } catch (error) {
      await rm(path, { force: true });
      throw error;
    }
  };

  const storage: S3Storage = {
    driver: 's3',
    bucket,
    client,
    async moveFile(key, path, contentType) {
      const stored = await upload(key, path, contentType);
      await rm(path, { force: true });
      return stored;
    },
    async put(key, data, contentType) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey(key), Body: data, ContentType: contentType, ContentLength: data.length }));
      return described(key);
    },
    stat: head,
    read: get,
    async localFile(key, scratchPath) {
      await download(key, scratchPath);
      return scratchPath;
    },
    async delete(key) {
      // DeleteObject succeeds for a missing key, like the local driver's rm --force.
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: objectKey(key) }));
    },
    async entries(folder) {
      const listed = `${objectKey(assertSafeFolder(folder))}/`;
      const entries: StoredEntry[] = [];
      // S3 answers at most 1,000 keys a request; the continuation token asks for the next page.
      let continuationToken: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: listed, ContinuationToken: continuationToken }));
        for (const object of page.Contents ?? []) {
          if (!object.Key) continue;
          // An upload is listed only once it is whole: S3 has no temporary objects.
          entries.push({ key: prefix ? object.Key.slice(prefix.length + 1) : object.Key, modifiedAt: object.LastModified ?? new Date(0), temporary: false });
        }
        continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (continuationToken);
      return entries;
    },
    list: async (folder) => (await storage.entries(folder)).map((e) => e.key),
  };
  return storage;
}

/**
 * Whether S3 says the object is missing. A missing bucket is a 404 too, but it is the store's
 * configuration that is wrong, not one object gone: taken as a missing object, a mix job dropped
 * its voice rendition and paid the provider for it again on every attempt. GetObject names it
 * (NoSuchBucket); HeadObject's 404 has no body, so stat() cannot tell the two apart.
 */
function isNotFound(error: unknown): boolean {
  const e = error as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  if (e?.name === 'NoSuchBucket' || e?.Code === 'NoSuchBucket') return false;
  return e?.name === 'NotFound' || e?.name === 'NoSuchKey' || e?.Code === 'NoSuchKey' || e?.$metadata?.httpStatusCode === 404;
}

/** The same error shape the local driver gives (code ENOENT), whichever driver runs. */
function notFoundError(key: string, cause: unknown): Error {
  return Object.assign(new Error(`storage object ${JSON.stringify(key)} not found`, { cause }), { code: 'ENOENT' });
}

/** HTTP ETags are quoted; S3 sends them quoted, but not every compatible store does. */
function quoted(etag: string): string {
  return etag.startsWith('"') || etag.startsWith('W/"') ? etag : `"${etag}"`;
}

function toReadable(body: unknown, key: string): Readable {
  // In Node the SDK's Body is an http.IncomingMessage, which is already a Readable.
  if (body instanceof Readable) return body;
  if (body && typeof (body as { transformToWebStream?: unknown }).transformToWebStream === 'function') {
    return Readable.fromWeb((body as { transformToWebStream(): import('node:stream/web').ReadableStream }).transformToWebStream());
  }
  throw new Error(`storage object ${JSON.stringify(key)} came back without a readable body`);
}
