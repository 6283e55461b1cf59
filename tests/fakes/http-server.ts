import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

// What the provider fakes (openai-speech-server, gemini-server, replicate-server) share: a
// real HTTP server on 127.0.0.1, a record of every request, a script of behaviours for the
// next requests, an account-like concurrency cap, and real audio made by ffmpeg.

export interface RecordedRequest {
  method: string;
  /** Path and query, e.g. "/v1/audio/speech". */
  path: string;
  headers: IncomingHttpHeaders;
  /** The body parsed as JSON; the raw text when it is not JSON; undefined when empty. */
  body: unknown;
  /** Aborts when the client goes away before the answer was sent (it gave up on the call). */
  gone: AbortSignal;
}

export interface FakeServerOptions {
  /** Time each successful answer takes (a benchmark uses seconds). Default 0. */
  delayMs?: number;
  /** Requests (or predictions) served at once; the rest wait in line. Default unlimited. */
  maxConcurrent?: number;
}

/** What every fake returns from start(). `B` is the fake's behaviour type. */
export interface FakeServer<B> {
  /** Base URL, e.g. "http://127.0.0.1:41234" (no trailing slash). */
  url: string;
  requests: RecordedRequest[];
  /** Queue behaviours: the next requests answer with these, in order; then success again. */
  script(behaviours: B[]): void;
  close(): Promise<void>;
}

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  recorded: RecordedRequest;
  /** Aborts when the client goes away before the answer was sent. */
  gone: AbortSignal;
}

/** Starts an HTTP server on 127.0.0.1 with a random port and records every request. */
export async function startHttpServer(
  handle: (ctx: RequestContext) => Promise<void>,
): Promise<{ url: string; requests: RecordedRequest[]; close(): Promise<void> }> {
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    const gone = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) gone.abort();
    });
    void (async () => {
      const raw = await readBody(req);
      const recorded: RecordedRequest = {
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        headers: req.headers,
        body: parseBody(raw),
        gone: gone.signal,
      };
      requests.push(recorded);
      await handle({ req, res, recorded, gone: gone.signal });
    })().catch((error: unknown) => {
      // A bug in a fake must be loud, not a hang: answer 599 so the test sees it.
      if (!res.headersSent) sendJson(res, 599, { fakeServerError: String(error) });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        // Hanging requests would keep close() waiting forever: cut them.
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function parseBody(raw: string): unknown {
  if (raw === '') return undefined;
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Sends audio bytes the way a provider streams them. */
export function sendAudio(res: ServerResponse, audio: Buffer, contentType = 'audio/mpeg'): void {
  res.writeHead(200, { 'content-type': contentType, 'content-length': audio.length });
  res.end(audio);
}

/** Promises the full length, sends half, then drops the connection (a cut-off download). */
export function sendTruncated(res: ServerResponse, audio: Buffer, contentType = 'audio/mpeg'): void {
  res.writeHead(200, { 'content-type': contentType, 'content-length': audio.length });
  res.write(audio.subarray(0, Math.floor(audio.length / 2)), () => res.destroy());
}

/**
 * A 200 audio answer with no length that never ends (chunked, as OpenAI streams speech): the
 * same MP3 over and over until the client goes away, as a broken proxy or a runaway model
 * could send. Resolves once the client has gone.
 */
export async function sendEndless(res: ServerResponse, audio: Buffer, gone: AbortSignal, contentType = 'audio/mpeg'): Promise<void> {
  res.writeHead(200, { 'content-type': contentType });
  while (!gone.aborted && !res.destroyed) {
    if (!res.write(audio)) await new Promise<void>((resolve) => { res.once('drain', resolve); res.once('close', resolve); });
  }
}

/** Bytes that are not audio, whatever the content-type says. Deterministic, no MP3 sync word. */
export function garbageBytes(length = 4096): Buffer {
  const text = 'this is not audio, just bytes with an audio content-type. ';
  return Buffer.from(text.repeat(Math.ceil(length / text.length)).slice(0, length));
}

/** Answers nothing until the client gives up (its timeout) or the server closes. */
export function hang(gone: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (gone.aborted) resolve();
    else gone.addEventListener('abort', () => resolve(), { once: true });
  });
}

/** Waits `ms`, or less if the client goes away. */
export function pause(ms: number, gone: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    gone.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      gone.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** The next scripted behaviour, or undefined (success) when the script is empty. */
export class BehaviourQueue<B> {
  private readonly queue: B[] = [];
  push(behaviours: B[]): void {
    this.queue.push(...behaviours);
  }
  next(): B | undefined {
    return this.queue.shift();
  }
}

/** A FIFO semaphore: an account's concurrency cap. Slots freed by clients that left are reused. */
export class ConcurrencyCap {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly max = Number.POSITIVE_INFINITY) {}

  /** Resolves with a release function once a slot is free; undefined if `gone` fired first. */
  async acquire(gone?: AbortSignal): Promise<(() => void) | undefined> {
    if (this.active >= this.max) {
      const admitted = await new Promise<boolean>((resolve) => {
        const admit = () => {
          gone?.removeEventListener('abort', leave);
          resolve(true);
        };
        const leave = () => {
          const index = this.waiting.indexOf(admit);
          if (index >= 0) this.waiting.splice(index, 1);
          resolve(false);
        };
        this.waiting.push(admit);
        gone?.addEventListener('abort', leave, { once: true });
      });
      if (!admitted) return undefined;
    } else {
      this.active += 1;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const nextInLine = this.waiting.shift();
      // The slot passes straight to the next in line, so `active` stays the same.
      if (nextInLine) nextInLine();
      else this.active -= 1;
    };
  }
}

const mp3Cache = new Map<string, Promise<Buffer>>();

/** A real MP3 (a sine tone) of about `seconds`, made once per duration by ffmpeg. */
export function makeMp3(seconds: number, frequency = 440): Promise<Buffer> {
  const duration = Math.max(0.1, Math.round(seconds * 10) / 10);
  const key = `${duration}:${frequency}`;
  let cached = mp3Cache.get(key);
  if (!cached) {
    cached = runTool('ffmpeg', [
      '-hide_banner', '-loglevel', 'error',
      '-f', 'lavfi', '-i', `sine=frequency=${frequency}:duration=${duration}`,
      '-c:a', 'libmp3lame', '-b:a', '64k', '-f', 'mp3', 'pipe:1',
    ]);
    mp3Cache.set(key, cached);
  }
  return cached;
}

/**
 * What ffprobe says about audio bytes, after ffmpeg decoded them end to end; rejects when
 * either cannot. A file, not a pipe: ffprobe cannot tell a piped MP3's duration.
 */
export async function probeAudio(audio: Buffer): Promise<{ formatName: string; durationSeconds: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'soundqueue-probe-'));
  const file = join(dir, 'audio');
  try {
    await writeFile(file, audio);
    await runTool('ffmpeg', ['-v', 'error', '-xerror', '-i', file, '-f', 'null', '-']);
    const out = await runTool('ffprobe', ['-v', 'error', '-show_entries', 'format=format_name,duration', '-of', 'json', file]);
    const format = (JSON.parse(out.toString('utf8')) as { format?: { format_name?: string; duration?: string } }).format;
    if (!format?.format_name) throw new Error('ffprobe found no audio format');
    return { formatName: format.format_name, durationSeconds: Number(format.duration) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function runTool(command: string, args: string[], input?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`${command} exited with ${code}: ${Buffer.concat(err).toString('utf8').trim()}`));
    });
    // ffprobe may stop reading early; a broken pipe on stdin is not a failure.
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}
