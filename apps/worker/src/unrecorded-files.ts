import { surelyNotCommitted } from '@soundqueue/shared/db/errors';
import type { WorkerContext } from './context';

// Files a job stored before recording them: a mix, a voice, a soundscape. Each is stored under
// a key of its own attempt or claim, which no later job writes, so one that no row records
// would stay in storage for ever unless the job that stored it removes it.

/** What the caller stored, and how it is named in logs (e.g. "mix", "voice", "soundscape"). */
export interface StoredFile {
  key: string;
  what: string;
  /** Ids for the log lines (trackId, keyHash, bookId, …). */
  context: Record<string, unknown>;
}

/** Removes a file no row records; a failure to is logged and the job goes on. */
export async function removeUnrecorded(ctx: WorkerContext, file: StoredFile): Promise<void> {
  await ctx.storage.delete(file.key).catch((error: unknown) =>
    ctx.logger.warn({ ...file.context, fileKey: file.key, err: error }, `could not remove the file of a ${file.what} no row records`),
  );
}

/**
 * After the statement recording `file` failed (the database refused it, or could not be
 * reached): the file is removed, unless the statement went through all the same (its
 * connection lost once it was sent), in which case the row names it (`recordedKey` reads the
 * key the row holds now) and it stays. When the row cannot be read either, the error decides:
 * the file goes only if the statement surely changed nothing; one kept while that is not known
 * is logged with its key.
 */
export async function dropIfUnrecorded(ctx: WorkerContext, file: StoredFile, recordedKey: () => Promise<string | null | undefined>, error: unknown): Promise<void> {
  const recorded = await recordedKey().then((key) => key === file.key, () => !surelyNotCommitted(error));
  if (recorded) {
    ctx.logger.warn({ ...file.context, fileKey: file.key, err: error }, `recording a ${file.what} failed but was, or may have been, committed; its file is kept`);
    return;
  }
  await removeUnrecorded(ctx, file);
}
