import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpeechGenerationError } from '@soundqueue/shared/errors';
import { getVoice } from '@soundqueue/shared/voices';
import { FfmpegError, runFfmpeg } from '../ffmpeg';
import type { SpeechProvider, SpeechRequest, SpeechResult } from './types';

// Text to speech with no key and no network: ffmpeg's flite source. Flite reads ASCII
// English; everything else is transliterated where a Latin spelling exists and dropped where
// it does not, and a text with nothing left to say fails for good rather than making silence.
//
// Output is 16-bit WAV at flite's own rate (16 kHz, 8 kHz for kal): lossless and decoded for
// free by every mix of the rendition, at about 2 MB per spoken minute.

// Characters NFKD would mangle or drop, spelled out first.
const SPELLED: Record<string, string> = {
  '½': ' one half', '¼': ' one quarter', '¾': ' three quarters', '€': ' euros', '£': ' pounds', '¥': ' yen',
  '¢': ' cents', '°': ' degrees', '×': ' times ', '÷': ' divided by ', '±': ' plus or minus ', '§': ' section ',
  '©': ' copyright ', '®': ' ', '™': ' ', '‘': "'", '’': "'", '‚': "'", '‛': "'", '′': "'", '“': '"', '”': '"',
  '„': '"', '‟': '"', '″': '"', '«': '"', '»': '"', '‹': "'", '›': "'", '–': ', ', '—': ', ', '―': ', ',
  '…': '...', '•': ', ', '·': ' ', '\u00a0': ' ', '\u2009': ' ', '\u202f': ' ',
  æ: 'ae', Æ: 'Ae', œ: 'oe', Œ: 'Oe', ß: 'ss', ẞ: 'Ss', ø: 'o', Ø: 'O', ł: 'l', Ł: 'L', đ: 'd', Đ: 'D',
  ð: 'd', Ð: 'D', þ: 'th', Þ: 'Th', ı: 'i', ŋ: 'ng', Ŋ: 'Ng',
};

// Cyrillic and Greek have conventional Latin spellings that flite can at least pronounce.
const CYRILLIC = 'а:a б:b в:v г:g д:d е:e ё:yo ж:zh з:z и:i й:y к:k л:l м:m н:n о:o п:p р:r с:s т:t у:u ф:f х:kh ц:ts ч:ch ш:sh щ:shch ъ: ы:y ь: э:e ю:yu я:ya і:i ї:yi є:ye ґ:g';
const GREEK = 'α:a β:v γ:g δ:d ε:e ζ:z η:i θ:th ι:i κ:k λ:l μ:m ν:n ξ:x ο:o π:p ρ:r σ:s ς:s τ:t υ:y φ:f χ:ch ψ:ps ω:o';
const SCRIPTS = new Map<string, string>(
  `${CYRILLIC} ${GREEK}`.split(' ').map((pair) => pair.split(':') as [string, string]),
);

function transliterate(char: string): string {
  const spelled = SPELLED[char];
  if (spelled !== undefined) return spelled;
  const lower = char.toLowerCase();
  const latin = SCRIPTS.get(lower);
  if (latin === undefined) return char;
  return char === lower ? latin : latin.charAt(0).toUpperCase() + latin.slice(1);
}

/** The text as flite can read it: ASCII, accents removed, other scripts spelled or dropped. */
export function speakableText(text: string): string {
  // Letters first as written (й is "y", not an и with a mark), then again once accents are
  // gone (Greek ά is an α with a mark), then compatibility forms (ﬁ, full-width, ²).
  const spelled = Array.from(text.normalize('NFC'), transliterate).join('');
  const unaccented = Array.from(spelled.normalize('NFD').replace(/\p{M}+/gu, ''), transliterate).join('');
  return unaccented
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .replace(/[^\x20-\x7e\n\t]+/g, ' ')
    .replace(/[ \t]+/g, ' ')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

export function createLocalSpeechProvider(options: { timeoutMs?: number } = {}): SpeechProvider {
  return {
    name: 'local',
    usesInstructions: false,
    async synthesize(request: SpeechRequest, signal?: AbortSignal): Promise<SpeechResult> {
      const voice = getVoice(request.voice);
      if (!voice) throw new SpeechGenerationError(`unknown voice "${request.voice}"`, { retryable: false });
      const text = speakableText(request.text);
      if (!/[A-Za-z0-9]/.test(text)) {
        throw new SpeechGenerationError('the text has nothing the local voice can speak (it reads Latin, Greek and Cyrillic script)', {
          retryable: false,
        });
      }
      const scratch = await mkdtemp(join(tmpdir(), 'sq-speech-'));
      try {
        await writeFile(join(scratch, 'text.txt'), text, 'ascii');
        // Relative names with the scratch directory as cwd: nothing in the path needs escaping.
        await runFfmpeg(
          ['-v', 'error', '-f', 'lavfi', '-i', `flite=textfile=text.txt:voice=${voice.fliteVoice}`, '-c:a', 'pcm_s16le', '-f', 'wav', 'speech.wav'],
          { cwd: scratch, signal, ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}) },
        );
        const audio = await readFile(join(scratch, 'speech.wav'));
        // A WAV header alone: flite found words but said nothing, and would again.
        if (audio.length <= 44) throw new SpeechGenerationError('the local voice produced no audio for this text', { retryable: false });
        return { audio, format: 'wav', usage: { characters: request.text.length }, costUsd: 0 };
      } catch (error) {
        if (error instanceof SpeechGenerationError) throw error;
        const detail = error instanceof FfmpegError ? `${error.message}\n${error.stderrTail}` : String(error);
        // A crash, a kill or a timeout: another attempt may well succeed.
        throw new SpeechGenerationError(`local speech synthesis failed: ${detail}`, { retryable: true, cause: error });
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
    },
  };
}
