import type { Readable } from 'node:stream';

export interface StoredObject {
  size: number;
  /** Changes whenever the bytes change; used as the HTTP ETag. */
  etag: string;
  modifiedAt: Date;
}

/** Where finished audio lives. Keys are relative paths like `tracks/<batch>/<track>.mp3`. */
export interface Storage {
  readonly driver: 'local' | 's3';
  /** Stores a file from the local disk (workers render to a temp file first). */
  putFile(key: string, path: string, contentType: string): Promise<StoredObject>;
  put(key: string, data: Buffer, contentType: string): Promise<StoredObject>;
  stat(key: string): Promise<StoredObject | null>;
  /** Streams the object, or the inclusive byte range [start, end] of it. */
  read(key: string, range?: { start: number; end: number }): Promise<Readable>;
  /** Copies the object to a local file (for ffmpeg, which wants paths). */
  download(key: string, path: string): Promise<void>;
  delete(key: string): Promise<void>;
}

const SAFE_KEY = /^[a-zA-Z0-9][a-zA-Z0-9._-]*(\/[a-zA-Z0-9][a-zA-Z0-9._-]*)*$/;

/** Refuses keys that could escape the storage root (`..`, absolute paths, odd characters). */
export function assertSafeKey(key: string): void {
  if (!SAFE_KEY.test(key) || key.split('/').some((part) => part === '..' || part === '.')) {
    throw new Error(`unsafe storage key: ${JSON.stringify(key)}`);
  }
}

export const storageKeys = {
  rendition: (keyHash: string, format: string) => `renditions/${keyHash.slice(0, 2)}/${keyHash}.${format}`,
  track: (batchId: string, trackId: string) => `tracks/${batchId}/${trackId}.mp3`,
  soundscape: (bookId: string, soundscapeId: string) => `soundscapes/${bookId}/${soundscapeId}.mp3`,
};
