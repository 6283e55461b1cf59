import type { Config } from '@soundqueue/shared/config';
import { createGeminiAnalysisProvider } from './analysis/gemini';
import { createLocalAnalysisProvider } from './analysis/local';
import type { AnalysisProvider } from './analysis/types';
import { createReplicateSoundscapeProvider } from './soundscape/replicate';
import { createLocalSoundscapeProvider } from './soundscape/local';
import type { SoundscapeProvider } from './soundscape/types';
import { createLocalSpeechProvider } from './speech/local';
import { createOpenAiSpeechProvider } from './speech/openai';
import type { SpeechProvider } from './speech/types';

export interface Providers {
  speech: SpeechProvider;
  analysis: AnalysisProvider;
  soundscape: SoundscapeProvider;
}

/** Picks each step's provider from config: the cloud one when configured, else local. */
export function createProviders(config: Config): Providers {
  const timeoutMs = config.PROVIDER_TIMEOUT_MS;
  return {
    speech:
      config.speechProvider === 'openai'
        ? createOpenAiSpeechProvider({
            apiKey: config.OPENAI_API_KEY!,
            baseURL: config.OPENAI_BASE_URL,
            timeoutMs,
            maxAudioBytes: config.PROVIDER_MAX_AUDIO_BYTES,
            pricePer1kChars: config.PRICE_OPENAI_TTS_PER_1K_CHARS,
          })
        : createLocalSpeechProvider(),
    analysis:
      config.analysisProvider === 'gemini'
        ? createGeminiAnalysisProvider({
            apiKey: config.GEMINI_API_KEY!,
            baseUrl: config.GEMINI_BASE_URL,
            model: config.GEMINI_MODEL,
            timeoutMs,
            pricePer1kTokens: config.PRICE_GEMINI_PER_1K_TOKENS,
          })
        : createLocalAnalysisProvider(),
    soundscape:
      config.soundscapeProvider === 'replicate'
        ? createReplicateSoundscapeProvider({
            apiToken: config.REPLICATE_API_TOKEN!,
            baseUrl: config.REPLICATE_BASE_URL,
            model: config.REPLICATE_SOUNDSCAPE_MODEL,
            pollIntervalMs: config.REPLICATE_POLL_INTERVAL_MS,
            timeoutMs,
            maxAudioBytes: config.PROVIDER_MAX_AUDIO_BYTES,
            pricePerSecond: config.PRICE_REPLICATE_PER_SECOND,
          })
        : createLocalSoundscapeProvider(),
  };
}
