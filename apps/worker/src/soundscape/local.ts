import { SoundscapeGenerationError } from '@soundqueue/shared/errors';
import { runFfmpeg } from '../ffmpeg';
import type { SoundscapeProvider, SoundscapeRequest, SoundscapeResult } from './types';

// Provisional local soundscape: brown noise shaped by the ambience words, with a crossfaded
// loop seam. (The full layered synthesizer replaces this file.)
export function layersFor(ambience: string[], prompt: string): string[] {
  const words = `${ambience.join(' ')} ${prompt}`.toLowerCase();
  const layers = ['rain', 'ocean', 'wind', 'fire', 'birds', 'city', 'insects'].filter((l) => words.includes(l));
  return layers.length ? layers : ['room'];
}

export function createLocalSoundscapeProvider(): SoundscapeProvider {
  return {
    name: 'local',
    async generate(request: SoundscapeRequest, signal?: AbortSignal): Promise<SoundscapeResult> {
      const seconds = request.durationSeconds;
      const fade = Math.min(2, seconds / 4);
      try {
        const { stdout } = await runFfmpeg(
          [
            '-f', 'lavfi', '-i', `anoisesrc=color=brown:amplitude=0.3:duration=${seconds + fade}:sample_rate=44100`,
            '-filter_complex',
            `[0]asplit[a][b];[a]atrim=0:${seconds},asetpts=PTS-STARTPTS[head];[b]atrim=${seconds}:${seconds + fade},asetpts=PTS-STARTPTS[tail];[tail][head]acrossfade=d=${fade}:c1=tri:c2=tri,lowpass=f=1200,aformat=channel_layouts=stereo`,
            '-c:a', 'libmp3lame', '-b:a', '128k', '-f', 'mp3', 'pipe:1',
          ],
          { signal, timeoutMs: 300_000 },
        );
        return { audio: stdout, format: 'mp3', usage: { seconds }, costUsd: 0 };
      } catch (error) {
        throw new SoundscapeGenerationError(`local soundscape failed: ${(error as Error).message}`, { cause: error });
      }
    },
  };
}
