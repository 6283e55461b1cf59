import { ContentAnalysisError, SpeechGenerationError } from '@soundqueue/shared/errors';
import type { Config } from '@soundqueue/shared/config';
import { createProviders, type Providers } from '../../apps/worker/src/providers';
import type { SpeechRequest } from '../../apps/worker/src/speech/types';
import type { SoundscapeRequest } from '../../apps/worker/src/soundscape/types';

/** A speech provider's refusal (a 400): not retried, so the track fails at once. */
export const speechRefusal = () => new SpeechGenerationError('provider said 400', { retryable: false, status: 400 });

/**
 * The configured providers, with `before` run ahead of every speech request: it may wait (a
 * call the test holds), throw (a call that fails) or return another request (a provider that
 * answers with different audio); then the real provider speaks.
 */
export function speechWith(config: Config, before: (request: SpeechRequest) => Promise<SpeechRequest | void> | SpeechRequest | void): Providers {
  const real = createProviders(config);
  return {
    ...real,
    speech: {
      name: real.speech.name,
      usesInstructions: real.speech.usesInstructions,
      async synthesize(request, signal) {
        return real.speech.synthesize((await before(request)) ?? request, signal);
      },
    },
  };
}

/**
 * The configured providers, with `before` run ahead of every soundscape request, as speechWith
 * does for speech: it may wait (a call the test holds), throw, or return another request.
 */
export function soundscapeWith(config: Config, before: (request: SoundscapeRequest) => Promise<SoundscapeRequest | void> | SoundscapeRequest | void): Providers {
  const real = createProviders(config);
  return {
    ...real,
    soundscape: {
      name: real.soundscape.name,
      async generate(request, signal) {
        return real.soundscape.generate((await before(request)) ?? request, signal);
      },
    },
  };
}

/**
 * The configured providers, but speech refuses every request as a provider's 400 would (not
 * retried): every track of a batch fails at once, so the batch ends `failed` with something
 * to retry.
 */
export function refusingSpeech(config: Config): Providers {
  return speechWith(config, () => {
    throw speechRefusal();
  });
}

/**
 * `real`'s analysis, except that it refuses, as a provider's 400 would (not retried), every
 * spread whose text mentions `word`, for as long as `refusing()` says so.
 */
export function analysisRefusing(real: Providers, word: string, refusing: () => boolean = () => true): Providers['analysis'] {
  return {
    name: real.analysis.name,
    async analyze(request, signal) {
      if (refusing() && request.text.includes(word)) throw new ContentAnalysisError('provider said 400', { retryable: false, status: 400 });
      return real.analysis.analyze(request, signal);
    },
  };
}
