/** The env that points every cloud provider at its local wire-format fake. */
export function fakeProviderEnv(fakes: { speech?: { url: string }; gemini?: { url: string }; replicate?: { url: string } }): Record<string, string> {
  return {
    ...(fakes.speech ? { SPEECH_PROVIDER: 'openai', OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: `${fakes.speech.url}/v1` } : {}),
    ...(fakes.gemini ? { ANALYSIS_PROVIDER: 'gemini', GEMINI_API_KEY: 'g-test', GEMINI_BASE_URL: fakes.gemini.url } : {}),
    ...(fakes.replicate ? { SOUNDSCAPE_PROVIDER: 'replicate', REPLICATE_API_TOKEN: 'r-test', REPLICATE_BASE_URL: `${fakes.replicate.url}/v1` } : {}),
  };
}
