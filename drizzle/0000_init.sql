CREATE TABLE "audio_generation_batches" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" text NOT NULL,
	"vision_id" text NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"variant_ids" jsonb NOT NULL,
	"voice_id" text NOT NULL,
	"model" text NOT NULL,
	"sections_requested" jsonb NOT NULL,
	"total_tracks_expected" integer NOT NULL,
	"tracks_completed" integer DEFAULT 0 NOT NULL,
	"tracks_failed" integer DEFAULT 0 NOT NULL,
	"tracks_cancelled" integer DEFAULT 0 NOT NULL,
	"tracks_pending" integer NOT NULL,
	"audio_set_ids" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"error_message" text,
	"idempotency_key" text,
	"request_hash" text NOT NULL,
	"run" integer DEFAULT 1 NOT NULL,
	"cancel_requested_at" timestamp with time zone,
	"cost_usd" numeric(14, 6) DEFAULT 0 NOT NULL,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "batches_counters_add_up" CHECK ("audio_generation_batches"."tracks_completed" + "audio_generation_batches"."tracks_failed" + "audio_generation_batches"."tracks_cancelled" + "audio_generation_batches"."tracks_pending" = "audio_generation_batches"."total_tracks_expected"),
	CONSTRAINT "batches_counters_non_negative" CHECK ("audio_generation_batches"."tracks_completed" >= 0 and "audio_generation_batches"."tracks_failed" >= 0 and "audio_generation_batches"."tracks_cancelled" >= 0 and "audio_generation_batches"."tracks_pending" >= 0)
);
--> statement-breakpoint
CREATE TABLE "audio_sets" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"batch_id" uuid NOT NULL,
	"user_id" text NOT NULL,
	"variant_id" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "audio_tracks" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"batch_id" uuid NOT NULL,
	"set_id" uuid NOT NULL,
	"user_id" text NOT NULL,
	"section_index" integer NOT NULL,
	"section_key" text NOT NULL,
	"section_title" text,
	"variant_id" text NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"mix_status" text DEFAULT 'pending' NOT NULL,
	"rendition_key" text,
	"voice_file_key" text,
	"mixed_file_key" text,
	"mixed_bytes" integer,
	"duration_ms" integer,
	"error_type" text,
	"error_message" text,
	"attempts" integer DEFAULT 0 NOT NULL,
	"cost_usd" numeric(14, 6) DEFAULT 0 NOT NULL,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "book_spreads" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"book_id" uuid NOT NULL,
	"index" integer NOT NULL,
	"first_page" integer NOT NULL,
	"last_page" integer NOT NULL,
	"text" text NOT NULL,
	"analysis" jsonb,
	"status" text DEFAULT 'pending' NOT NULL,
	"error_message" text,
	"attempts" integer DEFAULT 0 NOT NULL,
	"cost_usd" numeric(14, 6) DEFAULT 0 NOT NULL,
	"duration_ms" integer,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "books" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" text NOT NULL,
	"title" text NOT NULL,
	"author" text,
	"status" text DEFAULT 'pending' NOT NULL,
	"page_count" integer NOT NULL,
	"spread_count" integer NOT NULL,
	"processed_spreads" integer DEFAULT 0 NOT NULL,
	"failed_spreads" integer DEFAULT 0 NOT NULL,
	"scenes_created" integer DEFAULT 0 NOT NULL,
	"soundscapes_generated" integer DEFAULT 0 NOT NULL,
	"soundscapes_failed" integer DEFAULT 0 NOT NULL,
	"error_count" integer DEFAULT 0 NOT NULL,
	"processing_errors" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"processing_time_seconds" double precision,
	"step_timings" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"run" integer DEFAULT 1 NOT NULL,
	"cost_usd" numeric(14, 6) DEFAULT 0 NOT NULL,
	"started_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "books_spread_counts" CHECK ("books"."processed_spreads" + "books"."failed_spreads" <= "books"."spread_count")
);
--> statement-breakpoint
CREATE TABLE "provider_calls" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" text NOT NULL,
	"batch_id" uuid,
	"book_id" uuid,
	"provider" text NOT NULL,
	"kind" text NOT NULL,
	"units" double precision NOT NULL,
	"unit_type" text NOT NULL,
	"cost_usd" numeric(14, 6) DEFAULT 0 NOT NULL,
	"latency_ms" integer NOT NULL,
	"outcome" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "scenes" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"book_id" uuid NOT NULL,
	"index" integer NOT NULL,
	"first_spread" integer NOT NULL,
	"last_spread" integer NOT NULL,
	"first_page" integer NOT NULL,
	"last_page" integer NOT NULL,
	"description" text NOT NULL,
	"mood" text NOT NULL,
	"ambience" jsonb NOT NULL,
	"prompt" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "soundscapes" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"scene_id" uuid NOT NULL,
	"book_id" uuid NOT NULL,
	"user_id" text NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"provider" text,
	"file_key" text,
	"file_bytes" integer,
	"duration_ms" integer,
	"cost_usd" numeric(14, 6) DEFAULT 0 NOT NULL,
	"error_message" text,
	"attempts" integer DEFAULT 0 NOT NULL,
	"completed_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "voice_renditions" (
	"key_hash" text PRIMARY KEY NOT NULL,
	"status" text NOT NULL,
	"claim_token" text,
	"claimed_at" timestamp with time zone,
	"provider" text NOT NULL,
	"voice_id" text NOT NULL,
	"model" text NOT NULL,
	"storage_key" text,
	"format" text,
	"duration_ms" integer,
	"loudness_lufs" double precision,
	"characters" integer NOT NULL,
	"cost_usd" numeric(14, 6) DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_deliveries" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"endpoint_id" uuid NOT NULL,
	"event_id" text NOT NULL,
	"event_type" text NOT NULL,
	"payload" jsonb NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"last_status_code" integer,
	"last_latency_ms" integer,
	"last_error" text,
	"delivered_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_endpoints" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" text NOT NULL,
	"url" text NOT NULL,
	"events" jsonb NOT NULL,
	"secret" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "audio_sets" ADD CONSTRAINT "audio_sets_batch_id_audio_generation_batches_id_fk" FOREIGN KEY ("batch_id") REFERENCES "public"."audio_generation_batches"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "audio_tracks" ADD CONSTRAINT "audio_tracks_batch_id_audio_generation_batches_id_fk" FOREIGN KEY ("batch_id") REFERENCES "public"."audio_generation_batches"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "audio_tracks" ADD CONSTRAINT "audio_tracks_set_id_audio_sets_id_fk" FOREIGN KEY ("set_id") REFERENCES "public"."audio_sets"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "book_spreads" ADD CONSTRAINT "book_spreads_book_id_books_id_fk" FOREIGN KEY ("book_id") REFERENCES "public"."books"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "scenes" ADD CONSTRAINT "scenes_book_id_books_id_fk" FOREIGN KEY ("book_id") REFERENCES "public"."books"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "soundscapes" ADD CONSTRAINT "soundscapes_scene_id_scenes_id_fk" FOREIGN KEY ("scene_id") REFERENCES "public"."scenes"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "soundscapes" ADD CONSTRAINT "soundscapes_book_id_books_id_fk" FOREIGN KEY ("book_id") REFERENCES "public"."books"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_deliveries" ADD CONSTRAINT "webhook_deliveries_endpoint_id_webhook_endpoints_id_fk" FOREIGN KEY ("endpoint_id") REFERENCES "public"."webhook_endpoints"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "batches_user_vision_idx" ON "audio_generation_batches" USING btree ("user_id","vision_id");--> statement-breakpoint
CREATE INDEX "batches_status_idx" ON "audio_generation_batches" USING btree ("status");--> statement-breakpoint
CREATE INDEX "batches_created_at_idx" ON "audio_generation_batches" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "batches_user_status_idx" ON "audio_generation_batches" USING btree ("user_id","status");--> statement-breakpoint
CREATE UNIQUE INDEX "batches_user_idempotency_key_idx" ON "audio_generation_batches" USING btree ("user_id","idempotency_key") WHERE "audio_generation_batches"."idempotency_key" is not null;--> statement-breakpoint
CREATE UNIQUE INDEX "audio_sets_batch_variant_idx" ON "audio_sets" USING btree ("batch_id","variant_id");--> statement-breakpoint
CREATE INDEX "audio_sets_user_idx" ON "audio_sets" USING btree ("user_id");--> statement-breakpoint
CREATE UNIQUE INDEX "audio_tracks_set_section_idx" ON "audio_tracks" USING btree ("set_id","section_key");--> statement-breakpoint
CREATE INDEX "audio_tracks_batch_idx" ON "audio_tracks" USING btree ("batch_id","status");--> statement-breakpoint
CREATE INDEX "audio_tracks_user_idx" ON "audio_tracks" USING btree ("user_id");--> statement-breakpoint
CREATE UNIQUE INDEX "book_spreads_book_index_idx" ON "book_spreads" USING btree ("book_id","index");--> statement-breakpoint
CREATE INDEX "books_user_status_idx" ON "books" USING btree ("user_id","status");--> statement-breakpoint
CREATE INDEX "books_status_idx" ON "books" USING btree ("status");--> statement-breakpoint
CREATE INDEX "books_created_at_idx" ON "books" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "provider_calls_user_created_idx" ON "provider_calls" USING btree ("user_id","created_at");--> statement-breakpoint
CREATE INDEX "provider_calls_created_idx" ON "provider_calls" USING btree ("created_at");--> statement-breakpoint
CREATE UNIQUE INDEX "scenes_book_index_idx" ON "scenes" USING btree ("book_id","index");--> statement-breakpoint
CREATE UNIQUE INDEX "soundscapes_scene_idx" ON "soundscapes" USING btree ("scene_id");--> statement-breakpoint
CREATE INDEX "soundscapes_book_idx" ON "soundscapes" USING btree ("book_id");--> statement-breakpoint
CREATE UNIQUE INDEX "webhook_deliveries_endpoint_event_idx" ON "webhook_deliveries" USING btree ("endpoint_id","event_id");--> statement-breakpoint
CREATE INDEX "webhook_endpoints_user_idx" ON "webhook_endpoints" USING btree ("user_id");