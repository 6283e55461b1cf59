import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Providers } from '@soundqueue/worker';
import { createLocalAnalysisProvider } from '../../apps/worker/src/analysis/local';
import { createLocalSoundscapeProvider } from '../../apps/worker/src/soundscape/local';
import type { SpeechProvider } from '../../apps/worker/src/speech/types';
import { run } from './common';

// An "instant" speech provider: every call returns the same short voice clip, rendered once
// with ffmpeg's flite voice at start, with no network and no wait. It behaves like the
// OpenAI provider for caching (usesInstructions: true, so each text × instructions is its
// own rendition), which is what a first-time batch on the cloud provider costs.

let clip: Promise<Buffer> | undefined;

/** About 0.7 s of real speech, 22.05 kHz mono 16-bit WAV: the cheapest input to decode. */
export function instantClip(): Promise<Buffer> {
  clip ??= (async () => {
    const path = join(tmpdir(), `sq-bench-clip-${process.pid}.wav`);
    try {
      await run('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'flite=text=Hello there.:voice=slt', '-ac', '1', '-ar', '22050', '-c:a', 'pcm_s16le', '-y', path]);
      return await readFile(path);
    } finally {
      await rm(path, { force: true });
    }
  })();
  return clip;
}

export async function createInstantSpeechProvider(): Promise<SpeechProvider> {
  const audio = await instantClip();
  return {
    // The provider name is part of the rendition key; 'openai' gives the cloud provider's keys.
    name: 'openai',
    usesInstructions: true,
    async synthesize(request) {
      return { audio, format: 'wav', usage: { characters: request.text.length }, costUsd: 0 };
    },
  };
}

export async function instantProviders(): Promise<Providers> {
  return { speech: await createInstantSpeechProvider(), analysis: createLocalAnalysisProvider(), soundscape: createLocalSoundscapeProvider() };
}
