-- audio_tracks transitions (status, files, counters) become HOT updates: status leaves the batch index, and pages of
-- the two most updated tables keep 20 % free for new row versions. Not expressible in the drizzle schema.
DROP INDEX "audio_tracks_batch_idx";--> statement-breakpoint
CREATE INDEX "audio_tracks_batch_idx" ON "audio_tracks" USING btree ("batch_id");--> statement-breakpoint
ALTER TABLE "audio_tracks" SET (fillfactor = 80);--> statement-breakpoint
ALTER TABLE "audio_generation_batches" SET (fillfactor = 80);