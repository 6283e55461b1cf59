import type { SpreadAnalysis } from './analysis';

// Scenes from analysed spreads. Pure, so the book step can recompute it after a crash and get
// the same scenes, and so it is tested without a queue.

export interface SegmentableSpread {
  index: number;
  firstPage: number;
  lastPage: number;
  /** null when the spread's analysis failed: it then continues the scene before it. */
  analysis: SpreadAnalysis | null;
}

export interface Scene {
  index: number;
  firstSpread: number;
  lastSpread: number;
  firstPage: number;
  lastPage: number;
  description: string;
  mood: string;
  ambience: string[];
  /** A prose prompt for a soundscape model. */
  prompt: string;
}

const MAX_AMBIENCE = 10;
const NEUTRAL = { description: 'An unspecified setting', mood: 'neutral', ambience: ['quiet room tone'] };
const UNSPECIFIED = new Set(['', 'unknown', 'unspecified', 'none', 'n/a', 'na']);

export function segmentScenes(spreads: readonly SegmentableSpread[]): Scene[] {
  const ordered = [...spreads].sort((a, b) => a.index - b.index);
  const groups: SegmentableSpread[][] = [];
  for (const [position, spread] of ordered.entries()) {
    const current = groups.at(-1);
    // The first spread opens a scene whatever its analysis says, or whether it has one.
    if (position === 0 || !current || spread.analysis?.sceneChanged === true) groups.push([spread]);
    else current.push(spread);
  }
  return groups.map((group, index) => toScene(group, index));
}

function toScene(group: readonly SegmentableSpread[], index: number): Scene {
  const first = group[0]!;
  const last = group.at(-1)!;
  const analysed = group.flatMap((spread) => (spread.analysis ? [spread.analysis] : []));
  const lead = analysed[0];
  const description = lead ? describe(lead) : NEUTRAL.description;
  const mood = lead && !isUnspecified(lead.mood) ? lead.mood.trim() : NEUTRAL.mood;
  const ambience = lead ? mergeAmbience(analysed) : NEUTRAL.ambience;
  return {
    index,
    firstSpread: first.index,
    lastSpread: last.index,
    firstPage: first.firstPage,
    lastPage: last.lastPage,
    description,
    mood,
    ambience,
    prompt: promptFor(description, mood, ambience),
  };
}

function isUnspecified(value: string): boolean {
  return UNSPECIFIED.has(value.trim().toLowerCase());
}

function describe(analysis: SpreadAnalysis): string {
  const setting = isUnspecified(analysis.setting) ? '' : analysis.setting.trim();
  const time = isUnspecified(analysis.timeOfDay) ? '' : analysis.timeOfDay.trim();
  if (!setting && !time) return NEUTRAL.description;
  if (!setting) return `A scene at ${time}`;
  // A provider's setting may already say when ("a harbour at dusk"); saying it twice reads badly.
  const withTime = time && !setting.toLowerCase().includes(time.toLowerCase()) ? `${setting} at ${time}` : setting;
  return withTime.charAt(0).toUpperCase() + withTime.slice(1);
}

/**
 * The opening spread's sounds come first (it is what the reader meets); a sound that recurs in
 * later spreads joins them, since one soundscape plays for the whole scene, but a sound heard
 * once mid-scene does not.
 */
function mergeAmbience(analysed: readonly SpreadAnalysis[]): string[] {
  const seen = new Map<string, { word: string; count: number }>();
  for (const analysis of analysed) {
    for (const word of new Set(analysis.ambience.map((w) => w.trim()).filter(Boolean))) {
      const key = word.toLowerCase();
      const entry = seen.get(key);
      if (entry) entry.count += 1;
      else seen.set(key, { word, count: 1 });
    }
  }
  const opening = new Set(analysed[0]!.ambience.map((w) => w.trim().toLowerCase()));
  const merged = [...seen].filter(([key, { count }]) => opening.has(key) || count >= 2).map(([, { word }]) => word);
  return merged.length > 0 ? merged.slice(0, MAX_AMBIENCE) : NEUTRAL.ambience;
}

function promptFor(description: string, mood: string, ambience: readonly string[]): string {
  return (
    `Ambient soundscape: ${description.replace(/[.\s]+$/, '')}. Mood: ${mood}. ` +
    `Sounds: ${ambience.join(', ')}. ` +
    'A continuous, loopable background bed with no music, no voices and no speech.'
  );
}
