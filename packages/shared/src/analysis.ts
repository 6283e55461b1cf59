import { z } from 'zod';

/** What one spread's analysis says; stored as book_spreads.analysis (jsonb). */
export const spreadAnalysisSchema = z.object({
  sceneChanged: z.boolean(),
  setting: z.string().min(1).max(500),
  timeOfDay: z.string().min(1).max(100),
  mood: z.string().min(1).max(200),
  ambience: z.array(z.string().min(1).max(100)).max(20),
  confidence: z.number().min(0).max(1),
});

export type SpreadAnalysis = z.infer<typeof spreadAnalysisSchema>;
