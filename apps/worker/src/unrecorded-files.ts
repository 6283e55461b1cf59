import { surelyNotCommitted } from '@soundqueue/shared/db/errors';
import { namedTrackFiles } from '@soundqueue/shared/rollup/tracks';
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

/**
 * Removes the mixes under tracks/<batch>/ that no track row of the batch names, once the
 * batch has ended `run`: those of attempts whose worker died between storing the file and
 * recording it (nothing else knows their keys). One listing and one statement per batch end.
 *
 * Safe against every job still going: the files are listed first, and the batch read after
 * that, in the same snapshot as the names. If the batch has ended `run` and is still on it
 * then, no later run had begun when the listing was made, so every listed file is of a run
 * that has ended, and no job can record it any more (every track is finished, and a job of an
 * older run changes nothing; see ofRun). A later run's files are not listed, or the batch is
 * found on another run and nothing is removed: that run's end does it. A job still mixing
 * for an ended run whose file lands after the listing removes its own when its completion is
 * refused.
 */
export async function removeUnnamedTrackFiles(ctx: WorkerContext, batchId: string, run: number): Promise<void> {
  try {
    const stored = await ctx.storage.list(`tracks/${batchId}/`);
    if (stored.length === 0) return;
    const batch = await namedTrackFiles(ctx.db, batchId);
    if (!batch || batch.run !== run || ['pending', 'processing'].includes(batch.status)) return;
    const named = new Set(batch.keys);
    // Every completed track names its file: fewer names than that is a read gone wrong, and
    // removing on it would take served files.
    if (named.size < batch.tracksCompleted) {
      ctx.logger.error({ batchId, named: named.size, tracksCompleted: batch.tracksCompleted }, 'fewer track files named than tracks completed; removing none');
      return;
    }
    for (const key of stored) {
      if (named.has(key)) continue;
      ctx.logger.warn({ batchId, fileKey: key }, 'removing a mix no track row names (its worker stopped between storing and recording it)');
      await removeUnrecorded(ctx, { key, what: 'mix', context: { batchId } });
    }
  } catch (error) {
    // The batch's end stands; the files stay until a later end of this batch, or the storage
    // sweep (storage-sweep.ts), looks again.
    ctx.logger.warn({ batchId, err: error }, 'could not look for mixes no track row names');
  }
}
