import { createHash, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { access, copyFile, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { assertSafeFolder, assertSafeKey, type Storage, type StoredEntry, type StoredObject } from './types';

/** Files under one directory; fine for one machine or a shared volume. */
export function createLocalStorage(root: string): Storage {
  const base = resolve(root);
  const pathOf = (key: string) => {
    assertSafeKey(key);
    return join(base, key);
  };
  const describe = async (path: string): Promise<StoredObject | null> => {
    try {
      const s = await stat(path);
      const etag = createHash('sha1').update(`${s.size}:${s.mtimeMs}:${s.ino}`).digest('hex').slice(0, 20);
      return { size: s.size, etag: `"${etag}"`, modifiedAt: s.mtime };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
  };
  // A directory is made only when an operation finds it missing (ENOENT), not before every
  // write: most writes land in a directory that exists, and each system call counts here.
  // ENOENT for a missing source file comes back from the second try unchanged.
  const inParentOf = async <T>(path: string, op: () => Promise<T>): Promise<T> => {
    try {
      return await op();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      await mkdir(dirname(path), { recursive: true });
      return await op();
    }
  };
  // Write to a temp name and rename: a reader never sees a half-written file, and a worker
  // killed mid-write leaves no object behind.
  const atomically = async (key: string, write: (tmp: string) => Promise<void>) => {
    const path = pathOf(key);
    // Unique per write: replicas in containers share one pid, and two deliveries of a job can
    // write the same key in the same millisecond.
    const tmp = `${path}.${randomUUID()}.tmp`;
    try {
      await inParentOf(path, () => write(tmp));
      await rename(tmp, path);
    } catch (error) {
      await rm(tmp, { force: true });
      throw error;
    }
    return (await describe(path)) as StoredObject;
  };
  // The caller's file becomes the object in one rename, atomic like the temp-name path above,
  // without copying; across file systems (EXDEV) it is copied that way and then removed.
  const move = async (key: string, source: string) => {
    const path = pathOf(key);
    try {
      await inParentOf(path, () => rename(source, path));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
      await atomically(key, (tmp) => copyFile(source, tmp));
      await rm(source, { force: true });
    }
    return (await describe(path)) as StoredObject;
  };

  // The temporary name `atomically` writes under: not an object until it is renamed into place.
  const TEMP_FILE = /\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp$/;
  const entriesUnder = async (folder: string): Promise<StoredEntry[]> => {
    let dirents;
    try {
      dirents = await readdir(join(base, folder), { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const entries: StoredEntry[] = [];
    for (const dirent of dirents) {
      const key = `${folder}/${dirent.name}`;
      if (dirent.isDirectory()) entries.push(...(await entriesUnder(key)));
      else if (dirent.isFile()) {
        // Gone between the listing and now (deleted, or a temporary file renamed into place).
        const stats = await stat(join(base, key)).catch((error: NodeJS.ErrnoException) => {
          if (error.code === 'ENOENT') return null;
          throw error;
        });
        if (stats) entries.push({ key, modifiedAt: stats.mtime, temporary: TEMP_FILE.test(dirent.name) });
      }
    }
    return entries;
  };

  return {
    driver: 'local',
    moveFile: (key, source) => move(key, source),
    put: (key, data) => atomically(key, (tmp) => writeFile(tmp, data)),
    stat: (key) => describe(pathOf(key)),
    async read(key, range): Promise<Readable> {
      // Opened before it is handed over, so a missing file fails here with ENOENT (as S3's
      // GetObject does) rather than later, mid-response.
      const stream = createReadStream(pathOf(key), range ? { start: range.start, end: range.end } : {});
      await once(stream, 'open');
      return stream;
    },
    async localFile(key) {
      // Fails with ENOENT for a missing object here, as S3's download does, not later in ffmpeg.
      const path = pathOf(key);
      await access(path);
      return path;
    },
    async delete(key) {
      await rm(pathOf(key), { force: true });
    },
    list: async (prefix) => (await entriesUnder(assertSafeFolder(prefix))).filter((e) => !e.temporary).map((e) => e.key),
    entries: (prefix) => entriesUnder(assertSafeFolder(prefix)),
  };
}
