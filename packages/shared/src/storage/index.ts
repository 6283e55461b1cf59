import type { Config } from '../config';
import { createLocalStorage } from './local';
import { createS3Storage } from './s3';
import type { Storage } from './types';

export * from './types';

export type StorageConfig = Pick<
  Config,
  | 'STORAGE_DRIVER'
  | 'STORAGE_DIR'
  | 'S3_ENDPOINT'
  | 'S3_REGION'
  | 'S3_BUCKET'
  | 'S3_PREFIX'
  | 'S3_ACCESS_KEY_ID'
  | 'S3_SECRET_ACCESS_KEY'
  | 'S3_FORCE_PATH_STYLE'
  | 'S3_MAX_SOCKETS'
  | 'S3_CONNECTION_TIMEOUT_MS'
  | 'S3_REQUEST_TIMEOUT_MS'
  | 'S3_SOCKET_TIMEOUT_MS'
>;

/** The storage driver the config asks for: files under STORAGE_DIR, or an S3 bucket. */
export function createStorage(config: StorageConfig): Storage {
  if (config.STORAGE_DRIVER === 's3') {
    if (!config.S3_BUCKET) throw new Error('STORAGE_DRIVER=s3 needs S3_BUCKET');
    return createS3Storage({
      endpoint: config.S3_ENDPOINT,
      region: config.S3_REGION,
      bucket: config.S3_BUCKET,
      prefix: config.S3_PREFIX,
      accessKeyId: config.S3_ACCESS_KEY_ID,
      secretAccessKey: config.S3_SECRET_ACCESS_KEY,
      forcePathStyle: config.S3_FORCE_PATH_STYLE,
      maxSockets: config.S3_MAX_SOCKETS,
      connectionTimeoutMs: config.S3_CONNECTION_TIMEOUT_MS,
      requestTimeoutMs: config.S3_REQUEST_TIMEOUT_MS,
      socketTimeoutMs: config.S3_SOCKET_TIMEOUT_MS,
    });
  }
  return createLocalStorage(config.STORAGE_DIR);
}
