import type { Readable } from 'node:stream';

export interface StoredObject {
  size: number;
  /** Changes whenever the bytes change; used as the HTTP ETag. */
  etag: string;
  modifiedAt: Date;
}

/** Where finished audio lives. Keys are relative paths like `tracks/<batch>/<track>.<mix>.mp3`. */
export interface Storage {
  readonly driver: 'local' | 's3';
  /**
   * Stores a local file the caller is done with; the file is gone afterwards. The local driver
   * renames it into place (copying only across file systems), so a worker's output is never
   * copied; S3 uploads it, then deletes it. On failure the file may still be there: the
   * caller's scratch cleanup removes it.
   */
  moveFile(key: string, path: string, contentType: string): Promise<StoredObject>;
  put(key: string, data: Buffer, contentType: string): Promise<StoredObject>;
  stat(key: string): Promise<StoredObject | null>;
  /** Streams the object, or the inclusive byte range [start, end] of it. */
  read(key: string, range?: { start: number; end: number }): Promise<Readable>;
  /**
   * A local file holding the object, for ffmpeg: the local driver's stored file itself, other
   * drivers a download to `scratchPath` (which the caller removes when the result is it).
   * Fails with code ENOENT when there is no such object, as `read` does.
   * Reading a stored file in place is safe because no driver writes one in place: a new
   * version is renamed over it, and a reader keeps the bytes it opened.
   */
  localFile(key: string, scratchPath: string): Promise<string>;
  delete(key: string): Promise<void>;
  /**
   * Every key under the folder `prefix` (a key's leading path ending in `/`, such as
   * `tracks/<batch>/`), at any depth, in no particular order; [] when there is none. An object
   * being written is listed only once it is whole (the local driver leaves out its temporary
   * file). For finding the files no row names (a batch's end), not for serving.
   */
  list(prefix: string): Promise<string[]>;
  /**
   * What `list` lists, each with the time it was stored, and (local driver) the temporary
   * files of writes in progress or abandoned, marked `temporary` (their keys are not keys to
   * read): for the storage sweep (apps/worker/src/storage-sweep.ts).
   */
  entries(prefix: string): Promise<StoredEntry[]>;
}

export interface StoredEntry {
  key: string;
  modifiedAt: Date;
  temporary: boolean;
}

const SAFE_KEY = /^[a-zA-Z0-9][a-zA-Z0-9._-]*(\/[a-zA-Z0-9][a-zA-Z0-9._-]*)*$/;

/** Refuses keys that could escape the storage root (`..`, absolute paths, odd characters). */
export function assertSafeKey(key: string): void {
  if (!SAFE_KEY.test(key) || key.split('/').some((part) => part === '..' || part === '.')) {
    throw new Error(`unsafe storage key: ${JSON.stringify(key)}`);
  }
}

/** A folder to list: a safe key followed by `/`. Returns it without the slash. */
export function assertSafeFolder(prefix: string): string {
  if (!prefix.endsWith('/')) throw new Error(`unsafe storage key: ${JSON.stringify(prefix)} (a folder to list ends with /)`);
  const folder = prefix.slice(0, -1);
  assertSafeKey(folder);
  return folder;
}

export const storageKeys = {
  // One file per claim (apps/worker/src/speech/rendition.ts), not per rendition: a job whose
  // lapsed claim another job took over and made ready still stores what its provider answered,
  // and must not replace the file the row now describes (and whose duration and loudness it
  // records); it removes its own instead. A job taking over a lapsed claim removes that claim's
  // file (its holder may have died after storing it). The row's storage_key says which one is used.
  // Renditions stored before carry no claim (`renditions/<hh>/<hash>.<format>`) and are read by
  // the same column.
  rendition: (keyHash: string, claim: string, format: string) => `renditions/${keyHash.slice(0, 2)}/${keyHash}.${claim}.${format}`,
  // One file per mix (a random id each mix job attempt draws), not per track: a mix job whose
  // completion is refused (a job of a run the batch has moved on from, a second delivery of a
  // stalled job) has stored its file by then, and must not replace the file the row now
  // describes; it removes its own instead. A batch's end removes the files under
  // tracks/<batch>/ no track names (removeUnnamedTrackFiles): those of attempts whose worker
  // died between storing and recording. The row's mixed_file_key says which one is served.
  // Mixes stored before carry no id (`tracks/<batch>/<track>.mp3`) and are served by the same
  // column.
  track: (batchId: string, trackId: string, mixId: string) => `tracks/${batchId}/${trackId}.${mixId}.mp3`,
  // One file per claim (rollup/books.ts), not per soundscape: a job whose claim was taken
  // from it (its run timed out and the book was started again) may still store what its
  // provider answered, and must not replace the file the row now describes. The row's
  // file_key says which one is served.
  soundscape: (bookId: string, soundscapeId: string, claim: string) => `soundscapes/${bookId}/${soundscapeId}.${claim}.mp3`,
};
