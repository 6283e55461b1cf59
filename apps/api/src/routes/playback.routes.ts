import { and, eq } from 'drizzle-orm';
import { Router } from 'express';
import { z } from 'zod';
import { audioTracks, soundscapes } from '@soundqueue/shared/db/schema';
import type { ApiContext } from '../context';
import { HttpError, requireJson, validate } from '../http-errors';
import { parseAudioPath } from '../audio-paths';
import { parseId } from '../ids';
import { mintedLifetime } from '../auth';

// An <audio src> cannot send an Authorization header, and fetching the whole file into a
// blob: URL loses streaming and seeking. A playback URL is the audio URL with a token signed
// for that one path: the player streams it with HTTP Range like any file, for
// PLAYBACK_URL_TTL_SECONDS, and the token opens nothing else (see auth.ts).

export const playbackUrlSchema = z
  .object({
    audio_url: z
      .string()
      .max(200, 'must be at most 200 characters')
      .refine(
        (path) => path.startsWith('/v1/') && parseAudioPath(path.slice('/v1'.length)) !== null,
        'must be an audio_url this API returned: /v1/audio/tracks/<id>/audio or /v1/soundscapes/<id>/audio',
      ),
  })
  .strict();

export function playbackRoutes(ctx: ApiContext): Router {
  const router = Router();

  router.post('/playback-urls', requireJson, async (req, res) => {
    const { audio_url: path } = validate(playbackUrlSchema, req.body);
    const { kind, id: rawId } = parseAudioPath(path.slice('/v1'.length))!;
    const userId = req.principal!.userId;
    // Only for the caller's own audio: someone else's id is a 404, as on the audio route.
    if (kind === 'track') {
      const id = parseId(rawId, 'track');
      const [track] = await ctx.db.select({ id: audioTracks.id }).from(audioTracks).where(and(eq(audioTracks.id, id), eq(audioTracks.userId, userId)));
      if (!track) throw new HttpError(404, 'not_found', 'track not found');
    } else {
      const id = parseId(rawId, 'soundscape');
      const [row] = await ctx.db.select({ id: soundscapes.id }).from(soundscapes).where(and(eq(soundscapes.id, id), eq(soundscapes.userId, userId)));
      if (!row) throw new HttpError(404, 'not_found', 'soundscape not found');
    }
    const ttl = mintedLifetime(req.tokenExpiresAt, ctx.config.PLAYBACK_URL_TTL_SECONDS);
    // Ids are compared lower-case by the routes; the token names the path as requested.
    const canonical = path.toLowerCase();
    const token = await ctx.auth.signPlayback(req.principal!, canonical, `${ttl}s`);
    res.status(201).json({ url: `${canonical}?playback_token=${token}`, expires_in: ttl });
  });

  return router;
}
