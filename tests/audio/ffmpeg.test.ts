import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FfmpegError, InvalidAudioError, measureLoudness, probeAudio, runFfmpeg } from '../../apps/worker/src/ffmpeg';
import { scratchPerTest } from './scratch';

const dir = scratchPerTest();

/** A real 4-second file holding a 1 kHz sine at -6 dBFS, encoded by ffmpeg with `codecArgs`. */
async function makeAudio(name: string, codecArgs: string[]): Promise<string> {
  const path = join(dir(), name);
  await runFfmpeg(['-v', 'error', '-f', 'lavfi', '-i', "aevalsrc='0.5*sin(2*PI*1000*t)':s=44100:d=4", ...codecArgs, '-y', path]);
  return path;
}

async function truncate(path: string, fraction: number): Promise<string> {
  const bytes = await readFile(path);
  const cut = path.replace(/(\.\w+)$/, '-cut$1');
  await writeFile(cut, bytes.subarray(0, Math.floor(bytes.length * fraction)));
  return cut;
}

describe('runFfmpeg', () => {
  it('returns stdout as bytes and never prints the banner', async () => {
    const { stdout, stderr } = await runFfmpeg(['-v', 'error', '-f', 'lavfi', '-i', 'anullsrc=r=8000:cl=mono', '-t', '0.5', '-f', 's16le', 'pipe:1']);
    expect(stdout.length).toBe(8000);
    expect(stderr).not.toMatch(/ffmpeg version/);
  });

  it('feeds `input` to stdin', async () => {
    const wav = await readFile(await makeAudio('in.wav', []));
    const { stdout } = await runFfmpeg(['-v', 'error', '-i', 'pipe:0', '-f', 's16le', '-ac', '1', 'pipe:1'], { input: wav });
    expect(stdout.length).toBe(4 * 44100 * 2);
  });

  it('fails with the exit code and the end of stderr', async () => {
    const error = await runFfmpeg(['-i', join(dir(), 'missing.wav'), '-f', 'null', '-']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FfmpegError);
    const failure = error as FfmpegError;
    expect(failure.reason).toBe('exit');
    expect(failure.exitCode).not.toBe(0);
    expect(failure.stderrTail).toMatch(/No such file/);
    expect(failure.stderrTail.split('\n').length).toBeLessThanOrEqual(20);
  });

  it('kills an endless run at its deadline', async () => {
    const started = Date.now();
    const error = await runFfmpeg(['-f', 'lavfi', '-i', 'anullsrc', '-f', 'null', '-'], { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FfmpegError);
    expect((error as FfmpegError).reason).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('kills a run when its signal aborts', async () => {
    const controller = new AbortController();
    const running = runFfmpeg(['-f', 'lavfi', '-i', 'anullsrc', '-f', 'null', '-'], { signal: controller.signal });
    setImmediate(() => controller.abort(new Error('shutting down')));
    const error = await running.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FfmpegError);
    expect((error as FfmpegError).reason).toBe('aborted');
  });
});

describe('probeAudio', () => {
  it('describes a good MP3 and WAV', async () => {
    const mp3 = await probeAudio(await makeAudio('a.mp3', ['-c:a', 'libmp3lame', '-b:a', '96k']));
    expect(mp3).toMatchObject({ codec: 'mp3', sampleRateHz: 44100, channels: 1 });
    expect(mp3.durationMs).toBeGreaterThan(3900);
    expect(mp3.durationMs).toBeLessThan(4200);
    expect(mp3.bitRate).toBeGreaterThan(0);
    const wav = await probeAudio(await makeAudio('a.wav', []));
    expect(wav).toMatchObject({ codec: 'pcm_s16le', sampleRateHz: 44100, channels: 1, durationMs: 4000 });
  });

  it('rejects garbage, text and an empty file', async () => {
    const garbage = join(dir(), 'garbage.mp3');
    await writeFile(garbage, randomBytes(4096));
    const text = join(dir(), 'text.wav');
    await writeFile(text, 'this is not audio at all\n'.repeat(50));
    const empty = join(dir(), 'empty.mp3');
    await writeFile(empty, '');
    for (const path of [garbage, text, empty]) {
      await expect(probeAudio(path)).rejects.toBeInstanceOf(InvalidAudioError);
    }
  });

  it('rejects truncated MP3 and WAV files', async () => {
    const mp3 = await makeAudio('b.mp3', ['-c:a', 'libmp3lame', '-b:a', '96k']);
    const wav = await makeAudio('b.wav', []);
    for (const cut of [await truncate(mp3, 0.5), await truncate(wav, 0.5)]) {
      await expect(probeAudio(cut)).rejects.toThrow(/truncated|damaged/);
    }
  });

  it('rejects an MP3 with garbage in the middle', async () => {
    const mp3 = await readFile(await makeAudio('c.mp3', ['-c:a', 'libmp3lame', '-b:a', '96k']));
    const damaged = join(dir(), 'damaged.mp3');
    const middle = Math.floor(mp3.length / 2);
    await writeFile(damaged, Buffer.concat([mp3.subarray(0, middle), randomBytes(3000), mp3.subarray(middle + 3000)]));
    await expect(probeAudio(damaged)).rejects.toBeInstanceOf(InvalidAudioError);
  });

  it('rejects a file with no audio stream', async () => {
    const path = join(dir(), 'video.mkv');
    await runFfmpeg(['-v', 'error', '-f', 'lavfi', '-i', 'color=c=black:s=32x32:d=1', '-c:v', 'ffv1', '-y', path]);
    await expect(probeAudio(path)).rejects.toThrow(/no audio stream/);
  });

  it('can skip the decode for a file just encoded', async () => {
    const wav = await makeAudio('d.wav', []);
    const cut = await truncate(wav, 0.5);
    const quick = await probeAudio(cut, { decode: false });
    expect(quick.durationMs).toBeGreaterThan(0);
    expect((await stat(cut)).size).toBeLessThan((await stat(wav)).size);
  });
});

describe('measureLoudness', () => {
  it('reads integrated loudness, true peak and range from ebur128', async () => {
    // BS.1770's reference: a 1 kHz sine at 0 dBFS in one channel measures -3.01 LUFS, so at
    // -6 dBFS it is -9 LUFS, with a true peak of -6 dBTP and no loudness range.
    const loudness = await measureLoudness(await makeAudio('e.wav', []));
    expect(loudness.integratedLufs).toBeCloseTo(-9, 0);
    expect(Math.abs(loudness.truePeakDbtp + 6)).toBeLessThan(0.2);
    expect(loudness.lraLu).toBeLessThan(0.5);
  });
});
