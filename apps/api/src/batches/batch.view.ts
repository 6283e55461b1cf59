import type { audioGenerationBatches, audioTracks, SectionRequest } from '@soundqueue/shared/db/schema';

/** A batch as the view needs it: its sections' keys and titles, their text not at all (lists
 * read only these; see listedBatch in batch-service.ts). */
type Batch = Omit<typeof audioGenerationBatches.$inferSelect, 'sectionsRequested'> & {
  sectionsRequested: Pick<SectionRequest, 'key' | 'title'>[];
};
type Track = typeof audioTracks.$inferSelect;

// The API's JSON for batches and tracks (snake_case, as the batch seed's frontend reads it).

export function trackView(track: Track) {
  return {
    id: track.id,
    batch_id: track.batchId,
    set_id: track.setId,
    section_key: track.sectionKey,
    section_title: track.sectionTitle,
    section_index: track.sectionIndex,
    variant_id: track.variantId,
    status: track.status,
    mix_status: track.mixStatus,
    duration_ms: track.durationMs,
    error_type: track.errorType,
    error_message: track.errorMessage,
    attempts: track.attempts,
    cost_usd: track.costUsd,
    version: track.version,
    audio_url: track.status === 'completed' ? `/v1/audio/tracks/${track.id}/audio` : null,
    started_at: track.startedAt,
    completed_at: track.completedAt,
  };
}

export function batchView(batch: Batch, tracks?: Track[]) {
  return {
    id: batch.id,
    vision_id: batch.visionId,
    status: batch.status,
    variant_ids: batch.variantIds,
    voice_id: batch.voiceId,
    model: batch.model,
    sections_requested: batch.sectionsRequested.map((s) => ({ key: s.key, title: s.title })),
    total_tracks_expected: batch.totalTracksExpected,
    tracks_completed: batch.tracksCompleted,
    tracks_failed: batch.tracksFailed,
    tracks_cancelled: batch.tracksCancelled,
    tracks_pending: batch.tracksPending,
    audio_set_ids: batch.audioSetIds,
    error_message: batch.errorMessage,
    run: batch.run,
    // Raised by every change: an event or answer with a lower version than one already
    // applied is older than it (events can arrive out of commit order).
    version: batch.version,
    cost_usd: batch.costUsd,
    created_at: batch.createdAt,
    started_at: batch.startedAt,
    completed_at: batch.completedAt,
    updated_at: batch.updatedAt,
    cancel_requested_at: batch.cancelRequestedAt,
    ...(tracks
      ? {
          tracks: [...tracks]
            .sort((a, b) => batch.variantIds.indexOf(a.variantId) - batch.variantIds.indexOf(b.variantId) || a.sectionIndex - b.sectionIndex)
            .map(trackView),
        }
      : {}),
  };
}
