import { unlink } from 'node:fs/promises';

/**
 * Deletes scratch files that may or may not exist. unlink rather than fs.rm: rm validates
 * with lstat and then walks the path like rimraf, several system calls where one does (a
 * few per cent of a track's CPU in benchmark 1, where scratch files are most of the I/O).
 */
export async function removeScratchFiles(...paths: string[]): Promise<void> {
  await Promise.all(
    paths.map((path) =>
      unlink(path).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      }),
    ),
  );
}
