import { randomUUID } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpeechGenerationError } from '@soundqueue/shared/errors';
import { getVoice } from '@soundqueue/shared/voices';
import { runFfmpeg } from '../ffmpeg';
import type { SpeechProvider, SpeechRequest, SpeechResult } from './types';

/** flite speaks ASCII: fold accents, keep punctuation that shapes speech, drop the rest. */
export function speakableText(text: string): string {
  return text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/[‘’]/g, "'")
    .replace(/[“”]/g, '"')
    .replace(/[–—]/g, ', ')
    .replace(/[^\x20-\x7e\n]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** ffmpeg's flite voices: no key, no network, real speech. */
export function createLocalSpeechProvider(): SpeechProvider {
  return {
    name: 'local',
    usesInstructions: false,
    async synthesize(request: SpeechRequest, signal?: AbortSignal): Promise<SpeechResult> {
      const text = speakableText(request.text);
      if (!/[a-z0-9]/i.test(text)) {
        throw new SpeechGenerationError('the text has nothing the local voice can speak (it needs letters or digits)', { retryable: false });
      }
      const voice = getVoice(request.voice)?.fliteVoice ?? 'kal';
      // A file, not the filter argument: filter-graph escaping of arbitrary text is fragile.
      const base = join(tmpdir(), `sq-flite-${randomUUID()}`);
      const textFile = `${base}.txt`;
      await writeFile(textFile, text);
      try {
        // To a file: a WAV written to a pipe has no length in its header.
        await runFfmpeg(['-f', 'lavfi', '-i', `flite=textfile=${textFile}:voice=${voice}`, '-ac', '1', '-ar', '22050', '-c:a', 'pcm_s16le', '-y', `${base}.wav`], {
          signal,
          timeoutMs: 300_000,
        });
        const audio = await readFile(`${base}.wav`);
        if (audio.length < 1000) throw new SpeechGenerationError('the local voice produced no audio');
        return { audio, format: 'wav', usage: { characters: request.text.length }, costUsd: 0 };
      } catch (error) {
        if (error instanceof SpeechGenerationError) throw error;
        throw new SpeechGenerationError(`local speech failed: ${(error as Error).message}`, { cause: error });
      } finally {
        await rm(textFile, { force: true });
        await rm(`${base}.wav`, { force: true });
      }
    },
  };
}
