import { Router } from 'express';
import { variants } from '@soundqueue/shared/variants';
import { voices } from '@soundqueue/shared/voices';

/** The catalogs a UI renders its pickers from. */
export function catalogRoutes(): Router {
  const router = Router();
  router.get('/audio/variants', (_req, res) => {
    res.json({
      variants: variants.map((v) => ({
        id: v.id,
        name: v.name,
        description: v.description,
        loudness_target_lufs: v.loudnessTargetLufs,
      })),
    });
  });
  router.get('/audio/voices', (_req, res) => {
    res.json({ voices: voices.map((v) => ({ id: v.id, label: v.label, description: v.description })) });
  });
  return router;
}
