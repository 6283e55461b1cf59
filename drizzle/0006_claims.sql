ALTER TABLE "book_spreads" ADD COLUMN "claim" uuid;--> statement-breakpoint
ALTER TABLE "soundscapes" ADD COLUMN "claim" uuid;