// One interface for every text-to-speech provider. A provider throws SpeechGenerationError
// (from @soundqueue/shared/errors) with `retryable`, `status` and `retryAfterSeconds` set
// from what the provider answered; it never retries by itself (the queue is the one place
// that retries).

export interface SpeechRequest {
  text: string;
  /** An OpenAI voice name from the catalog (packages/shared/src/voices.ts). */
  voice: string;
  model: string;
  /** Delivery instructions from the variant; providers that cannot use them ignore them. */
  instructions: string;
}

export interface SpeechResult {
  audio: Buffer;
  format: 'mp3' | 'wav';
  usage: { characters: number };
  costUsd: number;
}

export interface SpeechProvider {
  readonly name: 'openai' | 'local';
  /** False when instructions do not change the output, so the rendition cache ignores them. */
  readonly usesInstructions: boolean;
  synthesize(request: SpeechRequest, signal?: AbortSignal): Promise<SpeechResult>;
}
