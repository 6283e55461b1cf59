import { spawn } from 'node:child_process';

// The one place that starts ffmpeg and ffprobe. Arguments are passed as an array (no shell,
// so nothing in a path or a text can be interpreted), every run has a deadline, and a
// failure carries the exit code and the end of stderr, which is where ffmpeg says why.

export interface RunOptions {
  /** Kill the child after this long; default 10 minutes (a 20,000-character voice mix takes seconds). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Written to the child's stdin (use `-i pipe:0`). */
  input?: Buffer;
  /** Working directory: lets a filter name a scratch file without escaping its path. */
  cwd?: string;
}

export interface RunResult {
  stdout: Buffer;
  stderr: string;
}

export type FfmpegFailure = 'exit' | 'timeout' | 'aborted' | 'spawn';

export class FfmpegError extends Error {
  override name = 'FfmpegError';
  constructor(
    message: string,
    readonly reason: FfmpegFailure,
    readonly exitCode: number | null,
    /** The last lines of stderr: ffmpeg's explanation, without the whole log. */
    readonly stderrTail: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options);
  }
}

const DEFAULT_TIMEOUT_MS = 10 * 60_000;
const STDERR_TAIL_LINES = 20;
// A runaway log (a filter logging per frame) must not grow without bound in memory.
const STDERR_KEEP_BYTES = 1 << 20;

function tail(text: string, lines = STDERR_TAIL_LINES): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** ffmpeg's lines without the scratch path and the "[demuxer @ 0x…]" prefixes: fit for a user. */
function readable(lines: string[], path: string): string {
  return lines
    .map((line) => line.split(path).join('file').replace(/\[[\w-]+ @ 0x[0-9a-f]+\]\s*/g, '').replace(/\[(warning|error|fatal|panic)\]\s*/g, '').trim())
    .filter(Boolean)
    .join('; ');
}

function run(bin: string, args: string[], options: RunOptions): Promise<RunResult> {
  const { timeoutMs = DEFAULT_TIMEOUT_MS, signal, input, cwd } = options;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new FfmpegError(`${bin} was aborted before it started`, 'aborted', null, '', { cause: signal.reason }));
      return;
    }
    const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) });
    const stdout: Buffer[] = [];
    let stderr = '';
    let ended: { reason: FfmpegFailure; cause?: unknown } | undefined;

    const stop = (reason: FfmpegFailure, cause?: unknown) => {
      if (ended) return;
      ended = { reason, cause };
      // SIGKILL: whatever ffmpeg was writing is discarded anyway, and a stuck child must go now.
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => stop('timeout'), timeoutMs);
    const onAbort = () => stop('aborted', signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });

    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr += chunk;
      if (stderr.length > STDERR_KEEP_BYTES * 2) stderr = stderr.slice(-STDERR_KEEP_BYTES);
    });
    // ffmpeg may exit before reading all its input (an error, or it had enough): not our failure.
    child.stdin.on('error', () => {});
    child.stdin.end(input);

    child.on('error', (error) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      reject(new FfmpegError(`could not start ${bin}: ${error.message}`, 'spawn', null, '', { cause: error }));
    });
    child.on('close', (code, killedBy) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      const stderrTail = tail(stderr);
      if (ended) {
        const what = ended.reason === 'timeout' ? `timed out after ${timeoutMs} ms` : 'was aborted';
        reject(new FfmpegError(`${bin} ${what}`, ended.reason, code, stderrTail, { cause: ended.cause }));
      } else if (code !== 0) {
        const status = code === null ? `was killed by ${killedBy}` : `exited with code ${code}`;
        const last = stderrTail.split('\n').at(-1) ?? '';
        reject(new FfmpegError(`${bin} ${status}${last ? `: ${last}` : ''}`, 'exit', code, stderrTail));
      } else {
        resolve({ stdout: Buffer.concat(stdout), stderr });
      }
    });
  });
}

/** Runs ffmpeg with `args`; never reads the terminal, never prints the banner. */
export function runFfmpeg(args: string[], options: RunOptions = {}): Promise<RunResult> {
  return run('ffmpeg', ['-hide_banner', '-nostdin', ...args], options);
}

export function runFfprobe(args: string[], options: RunOptions = {}): Promise<RunResult> {
  return run('ffprobe', ['-hide_banner', ...args], options);
}

export interface AudioInfo {
  durationMs: number;
  codec: string;
  sampleRateHz: number;
  channels: number;
  bitRate?: number;
}

export class InvalidAudioError extends Error {
  override name = 'InvalidAudioError';
}

interface ProbeJson {
  streams?: Array<{ codec_type?: string; codec_name?: string; sample_rate?: string; channels?: number; duration?: string; bit_rate?: string }>;
  format?: { duration?: string; bit_rate?: string };
}

// Warnings that mean the bytes are damaged even though ffmpeg carried on decoding. Harmless
// ones ("Estimating duration from bitrate", ID3 notes) are left alone on purpose.
const DAMAGE = /corrupt|truncat|do not match|backstep|header missing|invalid data|error while decoding|overread|incomplete|invalid frame/i;

export interface ProbeOptions extends Pick<RunOptions, 'signal' | 'timeoutMs'> {
  /**
   * Decode the whole file and reject damage (default true). Turn off only for a file this
   * process just encoded with ffmpeg exiting cleanly: the decode would cost about a tenth of
   * the mix and can only confirm what the encoder already guaranteed.
   */
  decode?: boolean;
}

/**
 * What a file holds, rejecting anything that is not complete, decodable audio: no audio
 * stream, no duration, garbage, or a file cut short (its decoded length falls short of the
 * length its header declares, or the decoder reports damage).
 */
export async function probeAudio(path: string, options: ProbeOptions = {}): Promise<AudioInfo> {
  const { decode = true, ...run } = options;
  if (!decode) return probeHeader(path, run);
  return (await inspectAudio(path, {}, run)).info;
}

/**
 * probeAudio's full check, with `filter` (e.g. a loudness scan) run over the decoded audio in
 * the same pass, and `extraOutput` (ffmpeg output arguments; `pipe:1` comes back as
 * `output`), so a caller that must read the whole file anyway reads and decodes it once.
 * Returns the info (duration as decoded) and ffmpeg's log, where filters such as ebur128
 * print their results.
 */
export async function inspectAudio(
  path: string,
  pass: { filter?: string; extraOutput?: string[] } = {},
  options: Pick<RunOptions, 'signal' | 'timeoutMs'> = {},
): Promise<{ info: AudioInfo; log: string; output: Buffer }> {
  const info = await probeHeader(path, options);
  const declaredSeconds = info.durationMs / 1000;
  let result: RunResult;
  try {
    result = await runFfmpeg(
      [
        '-loglevel', 'level+info', '-nostats', '-progress', 'pipe:2', '-i', path,
        '-map', '0:a:0', ...(pass.filter ? ['-af', pass.filter] : []), '-f', 'null', '-',
        ...(pass.extraOutput ?? []),
      ],
      options,
    );
  } catch (error) {
    if (error instanceof FfmpegError && error.reason === 'exit') {
      throw new InvalidAudioError(`the audio cannot be decoded: ${readable(error.stderrTail.split('\n').slice(-1), path)}`, { cause: error });
    }
    throw error;
  }
  const problems = result.stderr
    .split('\n')
    .filter((line) => /\[(error|fatal|panic)\]/.test(line) || (/\[warning\]/.test(line) && DAMAGE.test(line)));
  if (problems.length > 0) {
    throw new InvalidAudioError(`the audio is damaged: ${readable(problems.slice(0, 3), path)}`);
  }
  const times = [...result.stderr.matchAll(/^out_time_us=(\d+)$/gm)];
  const decodedSeconds = Number(times.at(-1)?.[1] ?? 0) / 1e6;
  if (decodedSeconds <= 0) throw new InvalidAudioError('the audio decodes to nothing');
  // Headers (a Xing frame, a WAV chunk size) declare the full length; a cut file decodes shorter.
  if (decodedSeconds < declaredSeconds - Math.max(0.25, declaredSeconds * 0.02)) {
    throw new InvalidAudioError(`the audio is truncated: ${decodedSeconds.toFixed(2)} s decoded of ${declaredSeconds.toFixed(2)} s declared`);
  }
  return { info: { ...info, durationMs: Math.round(decodedSeconds * 1000) }, log: result.stderr, output: result.stdout };
}

/** ffprobe alone: what the container and stream headers say. */
async function probeHeader(path: string, options: RunOptions): Promise<AudioInfo> {
  let probed: RunResult;
  try {
    probed = await runFfprobe(['-v', 'error', '-print_format', 'json', '-show_streams', '-show_format', '-i', path], options);
  } catch (error) {
    if (error instanceof FfmpegError && error.reason === 'exit') {
      throw new InvalidAudioError(`not a readable audio file: ${readable(error.stderrTail.split('\n').slice(-1), path) || 'ffprobe failed'}`, { cause: error });
    }
    throw error;
  }
  const json = JSON.parse(probed.stdout.toString('utf8') || '{}') as ProbeJson;
  const stream = json.streams?.find((s) => s.codec_type === 'audio');
  if (!stream) throw new InvalidAudioError('the file has no audio stream');
  const seconds = Number(stream.duration ?? json.format?.duration);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new InvalidAudioError('the audio has no duration');
  const bitRate = Number(stream.bit_rate ?? json.format?.bit_rate);
  return {
    durationMs: Math.round(seconds * 1000),
    codec: stream.codec_name ?? 'unknown',
    sampleRateHz: Number(stream.sample_rate ?? 0),
    channels: stream.channels ?? 0,
    ...(Number.isFinite(bitRate) && bitRate > 0 ? { bitRate } : {}),
  };
}

export interface Loudness {
  integratedLufs: number;
  truePeakDbtp: number;
  lraLu: number;
}

/**
 * EBU R128 loudness of a file (ffmpeg's ebur128 with true peak). The true-peak scan
 * oversamples 4x, so this costs several times a plain decode: use it to verify, not per mix.
 */
export async function measureLoudness(path: string, options: RunOptions = {}): Promise<Loudness> {
  const { stderr } = await runFfmpeg(
    ['-nostats', '-i', path, '-map', '0:a:0', '-af', 'ebur128=peak=true:framelog=verbose', '-f', 'null', '-'],
    options,
  );
  const summary = parseEbur128Summary(stderr);
  if (summary.peakDb === undefined) throw new FfmpegError('ebur128 printed no true peak', 'exit', 0, tail(stderr));
  return { integratedLufs: summary.integratedLufs, truePeakDbtp: summary.peakDb, lraLu: summary.lraLu };
}

/**
 * The integrated loudness to a thousandth of an LU, from a run of
 * `ebur128=metadata=1,ametadata=mode=print:key=lavfi.r128.I` (the Summary rounds to a tenth).
 */
export function parseIntegratedLoudness(stderr: string): number {
  const at = stderr.lastIndexOf('lavfi.r128.I=');
  const match = at >= 0 ? /^lavfi\.r128\.I=(-?inf|-?[\d.]+)/.exec(stderr.slice(at)) : null;
  if (!match?.[1]) return parseEbur128Summary(stderr).integratedLufs;
  return match[1] === '-inf' ? Number.NEGATIVE_INFINITY : Number(match[1]);
}

/** Reads the Summary block ebur128 prints at the end of a run; `peakDb` is the true or sample peak it was asked for. */
export function parseEbur128Summary(stderr: string): { integratedLufs: number; lraLu: number; peakDb?: number } {
  const at = stderr.lastIndexOf('Summary:');
  const summary = at >= 0 ? stderr.slice(at) : '';
  const number = (pattern: RegExp) => {
    const match = pattern.exec(summary);
    if (!match?.[1]) return undefined;
    return match[1] === '-inf' ? Number.NEGATIVE_INFINITY : Number(match[1]);
  };
  const integratedLufs = number(/\bI:\s+(-?inf|-?[\d.]+) LUFS/);
  const lraLu = number(/\bLRA:\s+(-?inf|-?[\d.]+) LU/);
  if (integratedLufs === undefined || lraLu === undefined) {
    throw new FfmpegError('ebur128 printed no loudness summary', 'exit', 0, tail(stderr));
  }
  const peakDb = number(/\bPeak:\s+(-?inf|-?[\d.]+) dBFS/);
  return peakDb === undefined ? { integratedLufs, lraLu } : { integratedLufs, lraLu, peakDb };
}
