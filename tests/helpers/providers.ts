import { SpeechGenerationError } from '@soundqueue/shared/errors';
import type { Config } from '@soundqueue/shared/config';
import { createProviders, type Providers } from '../../apps/worker/src/providers';

/**
 * The configured providers, but speech refuses every request as a provider's 400 would (not
 * retried): every track of a batch fails at once, so the batch ends `failed` with something
 * to retry.
 */
export function refusingSpeech(config: Config): Providers {
  const real = createProviders(config);
  return {
    ...real,
    speech: {
      name: real.speech.name,
      usesInstructions: real.speech.usesInstructions,
      async synthesize() {
        throw new SpeechGenerationError('provider said 400', { retryable: false, status: 400 });
      },
    },
  };
}
