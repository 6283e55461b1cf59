-- Every change to a batch, track or book row raises its version by one (progress events carry it: a client applies a
-- state only if its version is higher than the one it shows, as events can reach it out of commit order). A trigger,
-- not a SET in each statement, so none can forget it; hand-written below the generated columns (drizzle has no
-- triggers). Adding a column with a constant default rewrites no table and keeps 0002's fillfactor; version is in
-- no index, so transitions stay HOT updates.
ALTER TABLE "audio_generation_batches" ADD COLUMN "version" bigint DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE "audio_tracks" ADD COLUMN "version" bigint DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE "books" ADD COLUMN "version" bigint DEFAULT 1 NOT NULL;--> statement-breakpoint
CREATE FUNCTION "soundqueue_next_version"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.version := OLD.version + 1;
  RETURN NEW;
END
$$;--> statement-breakpoint
CREATE TRIGGER "audio_generation_batches_version" BEFORE UPDATE ON "audio_generation_batches" FOR EACH ROW EXECUTE FUNCTION "soundqueue_next_version"();--> statement-breakpoint
CREATE TRIGGER "audio_tracks_version" BEFORE UPDATE ON "audio_tracks" FOR EACH ROW EXECUTE FUNCTION "soundqueue_next_version"();--> statement-breakpoint
CREATE TRIGGER "books_version" BEFORE UPDATE ON "books" FOR EACH ROW EXECUTE FUNCTION "soundqueue_next_version"();
