import { describe, expect, it } from 'vitest';
import { spreadAnalysisSchema } from '@soundqueue/shared/analysis';
import { ContentAnalysisError } from '@soundqueue/shared/errors';
import { toSpreads } from '@soundqueue/shared/pages';
import { ANALYSIS_FAILURE_MARKER, createLocalAnalysisProvider } from '../../apps/worker/src/analysis/local';
import { FOUR_SETTINGS, fourSettingBook } from '../fixtures/books';

const provider = createLocalAnalysisProvider();

async function analyseAll(pages: string[]) {
  const spreads = toSpreads(pages);
  return Promise.all(
    spreads.map(async (spread, i) => {
      const { analysis } = await provider.analyze({
        spreadIndex: spread.index,
        text: spread.text,
        previousText: i > 0 ? spreads[i - 1]!.text : null,
      });
      return analysis;
    }),
  );
}

const forest =
  'The forest was quiet. Mara walked between the oak trees and the ferns, and the woods closed behind her. ' +
  'Moss covered every fallen trunk in the grove, and leaves turned in the branches overhead.';
const forestAgain =
  'She left the path and followed a deer trail through the woodland, under pines and birches, ' +
  'until the forest opened into a clearing full of bracken.';

describe('local analysis provider', () => {
  it('labels every spread of the four-setting book with its setting and valid fields', async () => {
    const analyses = await analyseAll(fourSettingBook());

    expect(analyses).toHaveLength(20);
    for (const analysis of analyses) spreadAnalysisSchema.parse(analysis);
    expect(analyses.map((a) => a.setting)).toEqual(FOUR_SETTINGS.flatMap((s) => Array<string>(5).fill(s)));
    expect(analyses.slice(0, 5).every((a) => a.timeOfDay === 'dawn')).toBe(true);
    expect(analyses.slice(10, 15).every((a) => a.timeOfDay === 'night')).toBe(true);
  });

  it('reports a scene change exactly where the setting changes', async () => {
    const analyses = await analyseAll(fourSettingBook());
    const changes = analyses.flatMap((a, i) => (a.sceneChanged ? [i] : []));
    expect(changes).toEqual([0, 5, 10, 15]);
    for (const i of changes.slice(1)) expect(analyses[i]!.confidence).toBeGreaterThanOrEqual(0.6);
  });

  it('reports a change once when it falls inside a spread', async () => {
    // One page fewer at the start moves every change into the middle of a spread.
    const analyses = await analyseAll(fourSettingBook().slice(1));
    const changes = analyses.flatMap((a, i) => (a.sceneChanged ? [i] : []));
    expect(changes).toHaveLength(4);
    // The true changes sit inside spreads 4, 9 and 14; either side of them is right.
    for (const [n, straddle] of [4, 9, 14].entries()) expect([straddle, straddle + 1]).toContain(changes[n + 1]);
  });

  it('always opens a scene at spread 0', async () => {
    const { analysis } = await provider.analyze({ spreadIndex: 0, text: 'Nothing here says where.', previousText: null });
    expect(analysis.sceneChanged).toBe(true);
    expect(analysis.setting).toBe('unknown');
    expect(analysis.confidence).toBeLessThan(0.5);
    spreadAnalysisSchema.parse(analysis);
  });

  it('keeps a scene through a spread that names no place', async () => {
    const talk = '"Are you sure?" he asked. She was not, and said so, and neither of them spoke for a while.';
    expect((await provider.analyze({ spreadIndex: 3, text: talk, previousText: forest })).analysis.sceneChanged).toBe(false);
    expect((await provider.analyze({ spreadIndex: 4, text: forest, previousText: talk })).analysis.sceneChanged).toBe(false);
  });

  it('treats chapter headings, scene breaks and time jumps at a paragraph start as new scenes', async () => {
    for (const opening of ['Chapter 7', 'CHAPTER TWELVE: The Clearing', '* * *', 'The next morning, the mist had gone.', 'Hours later she woke.']) {
      const text = `${opening}\n\n${forestAgain}`;
      const { analysis } = await provider.analyze({ spreadIndex: 2, text, previousText: forest });
      expect(analysis.sceneChanged, opening).toBe(true);
    }
  });

  it('does not mistake narration, or a running page header, for a transition', async () => {
    const cases = [
      { text: `She knew that later that day the forest would be loud.\n\n${forestAgain}`, previousText: forest },
      { text: `Part of the path was flooded.\n\n${forestAgain}`, previousText: forest },
      { text: `Chapter 3\n\n${forestAgain}`, previousText: `Chapter 3\n\n${forest}` },
    ];
    for (const request of cases) {
      const { analysis } = await provider.analyze({ spreadIndex: 2, ...request });
      expect(analysis.sceneChanged, request.text.split('\n')[0]).toBe(false);
    }
  });

  it('describes the sound of the setting, the weather and the time of day', async () => {
    const analyses = await analyseAll(fourSettingBook());
    const [forestDawn, seaStorm, cityNight, castleFire] = [0, 5, 10, 15].map((i) => analyses[i]!.ambience);

    expect(forestDawn).toEqual(expect.arrayContaining(['forest birds', 'wind in leaves', 'dawn chorus birds']));
    expect(seaStorm).toEqual(expect.arrayContaining(['ocean waves', 'rolling thunder', 'heavy rain']));
    expect(cityNight).toContain('city hum');
    expect(cityNight).not.toContain('crickets'); // night insects belong to open land
    expect(castleFire).toContain('crackling fire');
    expect(analyses[5]!.mood).toBe('tense');

    const forestNight = `${forest} The night was warm, and the moon stood over the trees until midnight.`;
    const { analysis } = await provider.analyze({ spreadIndex: 1, text: forestNight, previousText: forest });
    expect(analysis.timeOfDay).toBe('night');
    expect(analysis.ambience).toContain('crickets');
  });

  it(`fails a spread containing ${ANALYSIS_FAILURE_MARKER}, without retry`, async () => {
    const text = `${forest}\n\n${ANALYSIS_FAILURE_MARKER}`;
    const error = await provider.analyze({ spreadIndex: 6, text, previousText: forest }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(ContentAnalysisError);
    expect((error as ContentAnalysisError).retryable).toBe(false);
    expect((error as Error).message).toMatch(/^Spread text could not be analysed: /);
    // The marker in the previous spread does not fail this one.
    await expect(provider.analyze({ spreadIndex: 7, text: forest, previousText: text })).resolves.toBeDefined();
  });

  it('is free and stops when aborted', async () => {
    const result = await provider.analyze({ spreadIndex: 0, text: forest, previousText: null });
    expect(provider.name).toBe('local');
    expect(result).toMatchObject({ usage: { tokens: 0 }, costUsd: 0 });
    await expect(provider.analyze({ spreadIndex: 0, text: forest, previousText: null }, AbortSignal.abort())).rejects.toThrow();
  });
});
