import type { books, scenes, soundscapes } from '@soundqueue/shared/db/schema';

type Book = typeof books.$inferSelect;

/**
 * The book seed's response formats, as the book's current state:
 * complete success, partial success (ready with a warning and the errors), complete failure
 * (failed, "All spreads failed to process"), and while processing, the progress so far.
 */
export function bookView(book: Book) {
  const stats = {
    totalSpreads: book.spreadCount,
    processedSpreads: book.processedSpreads,
    scenesCreated: book.scenesCreated,
    soundscapesGenerated: book.soundscapesGenerated,
    ...(book.errorCount > 0 ? { errorCount: book.errorCount } : {}),
    processingTimeSeconds: book.processingTimeSeconds === null ? null : Math.round(book.processingTimeSeconds * 100) / 100,
  };
  const base = {
    bookId: book.id,
    title: book.title,
    author: book.author,
    status: book.status,
    stats,
    progress: {
      spreadsAnalysed: book.processedSpreads + book.failedSpreads,
      spreadsFailed: book.failedSpreads,
      soundscapesFailed: book.soundscapesFailed,
      pageCount: book.pageCount,
    },
    run: book.run,
    // As a batch's: a state with a lower version than one already applied is older.
    version: book.version,
    costUsd: book.costUsd,
    createdAt: book.createdAt,
    startedAt: book.startedAt,
    completedAt: book.completedAt,
  };
  const errors = book.errorCount > 0 ? { errors: book.processingErrors } : {};
  if (book.status === 'failed') {
    return { success: false, ...base, error: book.processedSpreads === 0 ? 'All spreads failed to process' : 'Processing failed', ...errors };
  }
  if (book.status === 'ready' && book.errorCount > 0) {
    // An error with no spread or soundscape failed is a restart that could not be enqueued
    // (book-service.ts): the book stays ready with everything it had, and the warning must
    // not say soundscapes failed when every one was made.
    const warning =
      book.failedSpreads > 0
        ? 'Some spreads failed to process'
        : book.soundscapesFailed > 0
          ? 'Some soundscapes failed to generate'
          : 'Generation could not be started again';
    return { success: true, ...base, warning, ...errors };
  }
  return { success: true, ...base, ...errors };
}

export function sceneView(scene: typeof scenes.$inferSelect, soundscape: typeof soundscapes.$inferSelect | null) {
  return {
    id: scene.id,
    index: scene.index,
    firstSpread: scene.firstSpread,
    lastSpread: scene.lastSpread,
    firstPage: scene.firstPage,
    lastPage: scene.lastPage,
    description: scene.description,
    mood: scene.mood,
    ambience: scene.ambience,
    soundscape: soundscape
      ? {
          id: soundscape.id,
          status: soundscape.status,
          durationMs: soundscape.durationMs,
          error: soundscape.errorMessage,
          audioUrl: soundscape.status === 'completed' ? `/v1/soundscapes/${soundscape.id}/audio` : null,
        }
      : null,
  };
}
