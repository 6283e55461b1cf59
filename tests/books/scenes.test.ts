import { describe, expect, it } from 'vitest';
import type { SpreadAnalysis } from '@soundqueue/shared/analysis';
import { ContentAnalysisError } from '@soundqueue/shared/errors';
import { toSpreads } from '@soundqueue/shared/pages';
import { segmentScenes, type SegmentableSpread } from '@soundqueue/shared/scenes';
import { ANALYSIS_FAILURE_MARKER, createLocalAnalysisProvider } from '../../apps/worker/src/analysis/local';
import { fourSettingBook } from '../fixtures/books';

/** What the pipeline does: every spread analysed on its own, a failed analysis stored as null. */
async function analyseBook(pages: string[]): Promise<SegmentableSpread[]> {
  const provider = createLocalAnalysisProvider();
  const spreads = toSpreads(pages);
  return Promise.all(
    spreads.map(async (spread, i) => {
      const request = { spreadIndex: spread.index, text: spread.text, previousText: i > 0 ? spreads[i - 1]!.text : null };
      const analysis = await provider.analyze(request).then(
        (result) => result.analysis,
        (error: unknown) => {
          if (error instanceof ContentAnalysisError) return null;
          throw error;
        },
      );
      return { index: spread.index, firstPage: spread.firstPage, lastPage: spread.lastPage, analysis };
    }),
  );
}

/** Puts the failure marker on the first page of each given spread. */
function failing(pages: string[], spreadIndexes: number[]): string[] {
  return pages.map((page, p) => (spreadIndexes.includes(p / 2) ? `${page}\n\n${ANALYSIS_FAILURE_MARKER}` : page));
}

const analysis = (overrides: Partial<SpreadAnalysis> = {}): SpreadAnalysis => ({
  sceneChanged: false,
  setting: 'forest',
  timeOfDay: 'dawn',
  mood: 'peaceful',
  ambience: ['forest birds', 'wind in leaves'],
  confidence: 0.9,
  ...overrides,
});

const spread = (index: number, a: SpreadAnalysis | null): SegmentableSpread => ({
  index,
  firstPage: index * 2 + 1,
  lastPage: index * 2 + 2,
  analysis: a,
});

describe('segmentScenes with the local analyzer', () => {
  it('finds the four settings of the 40-page book as four scenes', async () => {
    const scenes = segmentScenes(await analyseBook(fourSettingBook()));

    expect(scenes.map((s) => [s.firstSpread, s.lastSpread])).toEqual([[0, 4], [5, 9], [10, 14], [15, 19]]);
    expect(scenes.map((s) => [s.firstPage, s.lastPage])).toEqual([[1, 10], [11, 20], [21, 30], [31, 40]]);
    expect(scenes.map((s) => s.index)).toEqual([0, 1, 2, 3]);
    expect(scenes.map((s) => s.description)).toEqual(['Forest at dawn', 'Sea', 'City at night', expect.stringMatching(/^Castle/)]);
    for (const scene of scenes) {
      expect(scene.prompt).toMatch(/^Ambient soundscape: /);
      expect(scene.prompt).toMatch(/no music, no voices/);
      for (const word of scene.ambience) expect(scene.prompt).toContain(word);
    }
    expect(scenes[1]!.ambience).toContain('rolling thunder');
    expect(scenes[3]!.ambience).toContain('crackling fire');
  });

  it('lets a failed spread continue the scene before it', async () => {
    const scenes = segmentScenes(await analyseBook(failing(fourSettingBook(), [3, 7, 8, 19])));
    expect(scenes.map((s) => [s.firstSpread, s.lastSpread])).toEqual([[0, 4], [5, 9], [10, 14], [15, 19]]);
  });

  it('still opens scene 0 when spread 0 fails, described by the next analysed spread', async () => {
    const analysed = await analyseBook(failing(fourSettingBook(), [0]));
    expect(analysed[0]!.analysis).toBeNull();

    const scenes = segmentScenes(analysed);
    expect(scenes).toHaveLength(4);
    expect(scenes[0]).toMatchObject({ index: 0, firstSpread: 0, lastSpread: 4, firstPage: 1, description: 'Forest at dawn' });
  });
});

describe('segmentScenes', () => {
  it('opens scene 0 at the first spread whatever its analysis says', () => {
    const scenes = segmentScenes([spread(0, analysis({ sceneChanged: false })), spread(1, analysis())]);
    expect(scenes).toHaveLength(1);
    expect(scenes[0]).toMatchObject({ index: 0, firstSpread: 0, lastSpread: 1, firstPage: 1, lastPage: 4 });
  });

  it('opens a scene at every sceneChanged and continues through failed spreads, in index order', () => {
    const input = [
      spread(3, null),
      spread(0, analysis({ sceneChanged: true })),
      spread(2, analysis({ sceneChanged: true, setting: 'sea', timeOfDay: 'night', ambience: ['ocean waves'] })),
      spread(1, null),
      spread(4, analysis({ sceneChanged: false })),
    ];
    const scenes = segmentScenes(input);
    expect(scenes.map((s) => [s.firstSpread, s.lastSpread])).toEqual([[0, 1], [2, 4]]);
    expect(scenes[1]).toMatchObject({ firstPage: 5, lastPage: 10, description: 'Sea at night' });
  });

  it('uses a neutral description when no spread of scene 0 was analysed', () => {
    const scenes = segmentScenes([spread(0, null), spread(1, analysis({ sceneChanged: true }))]);
    expect(scenes).toHaveLength(2);
    expect(scenes[0]).toMatchObject({ firstSpread: 0, lastSpread: 0, description: 'An unspecified setting', mood: 'neutral' });
    expect(scenes[0]!.ambience.length).toBeGreaterThan(0);
    expect(scenes[0]!.prompt).toMatch(/^Ambient soundscape: An unspecified setting\./);
  });

  it('builds the description from setting and time without saying either twice or saying "unknown"', () => {
    const describe = (setting: string, timeOfDay: string) =>
      segmentScenes([spread(0, analysis({ setting, timeOfDay }))])[0]!.description;
    expect(describe('a harbour at dusk', 'dusk')).toBe('A harbour at dusk');
    expect(describe('castle', 'unknown')).toBe('Castle');
    expect(describe('unknown', 'night')).toBe('A scene at night');
    expect(describe('Unspecified', 'unknown')).toBe('An unspecified setting');
  });

  it('keeps the opening sounds first and adds sounds that recur, not ones heard once', () => {
    const scenes = segmentScenes([
      spread(0, analysis({ ambience: ['forest birds'], mood: 'unknown' })),
      spread(1, analysis({ ambience: ['steady rain', 'owl'] })),
      spread(2, analysis({ ambience: ['steady rain', 'forest birds'] })),
    ]);
    expect(scenes[0]!.ambience).toEqual(['forest birds', 'steady rain']);
    expect(scenes[0]!.mood).toBe('neutral');
    expect(scenes[0]!.prompt).toBe(
      'Ambient soundscape: Forest at dawn. Mood: neutral. Sounds: forest birds, steady rain. ' +
        'A continuous, loopable background bed with no music, no voices and no speech.',
    );
  });

  it('has no scenes for no spreads', () => {
    expect(segmentScenes([])).toEqual([]);
  });
});
