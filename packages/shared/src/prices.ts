// Prices used to turn provider usage into cost_usd. Public list prices at the time of
// writing; override with PRICE_* env variables when your contract differs.

function price(name: string, fallback: number): number {
  const raw = process.env[name];
  // Empty or blank means unset, as in config.ts (Number('  ') would be a price of 0).
  const value = raw === undefined || raw.trim() === '' ? fallback : Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number`);
  return value;
}

export const prices = {
  /** OpenAI gpt-4o-mini-tts, USD per 1,000 input characters (about $0.015/minute). */
  openaiTtsPer1kChars: price('PRICE_OPENAI_TTS_PER_1K_CHARS', 0.012),
  /** Gemini Flash, USD per 1,000 tokens (input and output blended). */
  geminiPer1kTokens: price('PRICE_GEMINI_PER_1K_TOKENS', 0.0004),
  /** Replicate, USD per second of generated audio (GPU time, roughly). */
  replicatePerSecond: price('PRICE_REPLICATE_PER_SECOND', 0.0014),
  /** Local providers run on our own CPU. */
  local: 0,
};
