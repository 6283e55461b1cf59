import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SpeechGenerationError } from '@soundqueue/shared/errors';
import { voiceIds, voices, getVoice } from '@soundqueue/shared/voices';
import { probeAudio } from '../../apps/worker/src/ffmpeg';
import { createLocalSpeechProvider, speakableText } from '../../apps/worker/src/speech/local';
import { scratchPerTest } from './scratch';

const dir = scratchPerTest();
const provider = createLocalSpeechProvider();

const TEXT = 'The harbour lights came on one by one, and the evening settled over the water.';

describe('local speech (flite)', () => {
  it('says it is local, free of instructions', () => {
    expect(provider.name).toBe('local');
    expect(provider.usesInstructions).toBe(false);
  });

  // One voice per flite voice the catalog maps to, so every flite voice is exercised.
  const oneVoicePerFlite = [...new Map(voices.map((v) => [v.fliteVoice, v.id])).values()];

  it.each(oneVoicePerFlite.map((id) => [id]))('speaks with %s: decodable audio of a plausible length', async (voice) => {
    const result = await provider.synthesize({ text: TEXT, voice, model: 'local', instructions: 'ignored' });
    expect(result.format).toBe('wav');
    expect(result.costUsd).toBe(0);
    expect(result.usage.characters).toBe(TEXT.length);
    const path = join(dir(), `${voice}.wav`);
    await writeFile(path, result.audio);
    const info = await probeAudio(path);
    expect(info.channels).toBe(1);
    // 14 words: between about 2.5 words a second (slow) and 5 (brisk).
    expect(info.durationMs).toBeGreaterThan(2_800);
    expect(info.durationMs).toBeLessThan(7_000);
  });

  it('reads a long section (20,000 characters)', async () => {
    const text = 'The quick brown fox jumps over the lazy dog by the quiet river. '.repeat(320).slice(0, 20_000);
    const result = await provider.synthesize({ text, voice: 'echo', model: 'local', instructions: '' });
    const path = join(dir(), 'long.wav');
    await writeFile(path, result.audio);
    const info = await probeAudio(path);
    // About 3,300 words: roughly 15 to 30 minutes of speech.
    expect(info.durationMs).toBeGreaterThan(15 * 60_000);
    expect(info.durationMs).toBeLessThan(30 * 60_000);
  });

  it('rejects, for good, a text with nothing it can speak', async () => {
    for (const text of ['東京タワー 🌸', '   ', '… — “ ” 😀']) {
      const error = await provider.synthesize({ text, voice: 'nova', model: 'local', instructions: '' }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SpeechGenerationError);
      expect((error as SpeechGenerationError).retryable).toBe(false);
    }
  });

  it('rejects an unknown voice, for good', async () => {
    const error = await provider.synthesize({ text: TEXT, voice: 'darth', model: 'local', instructions: '' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SpeechGenerationError);
    expect((error as SpeechGenerationError).retryable).toBe(false);
  });

  it('speaks accented, typographic and non-Latin text it can transliterate', async () => {
    const result = await provider.synthesize({ text: 'Привет, café “Ærø” — naïve!', voice: 'coral', model: 'local', instructions: '' });
    const path = join(dir(), 'mixed.wav');
    await writeFile(path, result.audio);
    expect((await probeAudio(path)).durationMs).toBeGreaterThan(800);
  });
});

describe('speakableText', () => {
  it('keeps ASCII, strips accents, spells symbols and transliterates Cyrillic and Greek', () => {
    expect(speakableText('Plain text, 42 times.')).toBe('Plain text, 42 times.');
    expect(speakableText('café naïve façade')).toBe('cafe naive facade');
    expect(speakableText('“Quoted” — it’s… ½')).toBe('"Quoted" , it\'s... one half');
    expect(speakableText('Straße Ærø')).toBe('Strasse Aero');
    expect(speakableText('Привет')).toBe('Privet');
    expect(speakableText('Ελλάδα')).toBe('Ellada');
    expect(speakableText('東京 😀')).toBe('');
  });
});

describe('the voice catalog', () => {
  it('has the OpenAI voices, each mapped to a flite voice ffmpeg ships', () => {
    expect([...voiceIds].sort()).toEqual(['alloy', 'ash', 'ballad', 'coral', 'echo', 'fable', 'nova', 'onyx', 'sage', 'shimmer', 'verse']);
    for (const voice of voices) {
      expect(['kal', 'kal16', 'awb', 'rms', 'slt']).toContain(voice.fliteVoice);
      expect(voice.label.length).toBeGreaterThan(0);
      expect(voice.description.length).toBeGreaterThan(0);
    }
    expect(getVoice('onyx')?.label).toBe('Onyx');
    expect(getVoice('nobody')).toBeUndefined();
  });
});
