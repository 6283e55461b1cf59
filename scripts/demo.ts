import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SAMPLE_VARIANTS, SAMPLE_VISION, SAMPLE_VOICE, sampleBook } from './sample-content';

// `npm run demo`: submits a sample vision (14 sections × 3 variants) and a sample book to a
// running soundqueue (DEMO_URL, default http://localhost:3000), or to an `npm start` it runs
// itself, draws a progress bar per batch and book until both finish, and says where the
// files are and which page shows them.

const USAGE = `Usage: npm run demo [-- --token <token>] [--url <url>] [--keep]

  --url <url>     the API (default $DEMO_URL or http://localhost:3000)
  --token <jwt>   a token for a server that is already running (or $DEMO_TOKEN);
                  \`npm start\` prints one under "Dev token"
  --keep          when the demo started the server itself, keep it running afterwards

With nothing answering at the URL, the demo runs \`npm start\` itself, uses the dev token it
prints, and stops it at the end (unless --keep).`;

const { values: args } = parseArgs({
  options: {
    token: { type: 'string' },
    url: { type: 'string' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const baseUrl = (args.url ?? process.env.DEMO_URL ?? 'http://localhost:3000').replace(/\/+$/, '');
const tty = Boolean(process.stdout.isTTY);
const color = tty && !process.env.NO_COLOR;
const paint = (code: string, text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
const green = (t: string) => paint('32', t);
const red = (t: string) => paint('31', t);
const bold = (t: string) => paint('1', t);
const dim = (t: string) => paint('2', t);

class DemoError extends Error {}
const fail = (message: string): never => {
  throw new DemoError(message);
};

// ---------------------------------------------------------------------------------------------
// The server: the one at DEMO_URL, or an `npm start` of our own.

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
    return res.ok;
  } catch {
    return false;
  }
}

interface OwnServer {
  child: ChildProcess;
  token: Promise<string>;
  log: string[];
  exited: Promise<number | null>;
}

function startServer(port: number): OwnServer {
  const log: string[] = [];
  // Its own process group, so stopping it reaches npm, tsx and node, and nothing else.
  const child = spawn(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['start'], {
    cwd: repoRoot,
    env: { ...process.env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: process.platform !== 'win32',
  });
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const token = new Promise<string>((found, missing) => {
    let afterDevToken = false;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      log.push(line);
      // scripts/start.ts prints "Dev token (...):", a blank line, then the token indented.
      if (/^Dev token\b/.test(line.trim())) afterDevToken = true;
      else if (afterDevToken && line.trim()) {
        afterDevToken = false;
        found(line.trim());
      }
    });
    void exited.then((code) => missing(new DemoError(`\`npm start\` exited (code ${code}) before it was ready`)));
  });
  token.catch(() => {});
  createInterface({ input: child.stderr! }).on('line', (line) => log.push(line));
  return { child, token, log, exited };
}

async function stopServer(server: OwnServer): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  const signal = (name: NodeJS.Signals) => {
    try {
      if (process.platform === 'win32') server.child.kill(name);
      else process.kill(-server.child.pid!, name);
    } catch {
      // already gone
    }
  };
  signal('SIGTERM');
  const stopped = await Promise.race([server.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 20_000).unref())]);
  if (!stopped) signal('SIGKILL');
}

async function waitForServer(server: OwnServer, url: string, givenToken: string | undefined): Promise<string> {
  const deadline = Date.now() + 180_000;
  let exitCode: number | null | undefined;
  void server.exited.then((code) => (exitCode = code));
  while (Date.now() < deadline) {
    if (exitCode !== undefined) break;
    if (await healthy(url)) {
      // Its dev token when it prints one (its signing key is new at every start); else the
      // configured auth needs the token given to the demo.
      const token = await Promise.race([server.token, new Promise<null>((r) => setTimeout(() => r(null), 5_000).unref())]);
      if (token) return token;
      if (givenToken) return givenToken;
      fail('the server started but printed no dev token (auth is configured): pass --token or DEMO_TOKEN');
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  const tail = server.log.slice(-30).map((l) => `  | ${l}`).join('\n');
  return fail(`\`npm start\` did not come up at ${url}${exitCode !== undefined ? ` (it exited with code ${exitCode})` : ' within 3 minutes'}. Its last output:\n${tail}`);
}

// ---------------------------------------------------------------------------------------------
// The API

let token = '';

async function call<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    return fail(`${method} ${path}: could not reach ${baseUrl} (${(error as Error).message})`);
  }
  const text = await res.text();
  let json: any = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON
  }
  if (!res.ok) {
    const e = json?.error;
    const hint = res.status === 401 ? ' — is this the token the server printed?' : '';
    return fail(`${method} ${path}: ${e?.message ?? (text.slice(0, 200) || res.statusText)} [${e?.code ?? 'error'}, HTTP ${res.status}]${hint}`);
  }
  return json as T;
}

// ---------------------------------------------------------------------------------------------
// Progress

const BATCH_TERMINAL = ['completed', 'partial_success', 'failed', 'cancelled'];
const BOOK_TERMINAL = ['ready', 'failed'];
const LABEL: Record<string, string> = {
  pending: 'In Progress',
  processing: 'In Progress',
  completed: 'Complete',
  partial_success: 'Partial Success',
  failed: 'Failed',
  cancelled: 'Cancelled',
  ready: 'Ready',
};

function bar(fraction: number, width = 24): string {
  const filled = Math.round(Math.max(0, Math.min(1, fraction)) * width);
  return `[${green('█'.repeat(filled))}${dim('░'.repeat(width - filled))}]`;
}

const percent = (fraction: number) => `${String(Math.floor(Math.max(0, Math.min(1, fraction)) * 100)).padStart(3)}%`;

function batchLine(b: any): { fraction: number; text: string } {
  const done = b.tracks_completed + b.tracks_failed + b.tracks_cancelled;
  const fraction = b.total_tracks_expected ? done / b.total_tracks_expected : 0;
  const counts = `${b.tracks_completed} completed • ${b.tracks_failed ? red(`${b.tracks_failed} failed`) : '0 failed'} • ${b.tracks_pending} pending${b.tracks_cancelled ? ` • ${b.tracks_cancelled} cancelled` : ''}`;
  return { fraction, text: `${done}/${b.total_tracks_expected} tracks · ${counts} · ${LABEL[b.status] ?? b.status}` };
}

function bookLine(b: any): { fraction: number; text: string } {
  const s = b.stats;
  const analysed = b.progress.spreadsAnalysed as number;
  // Half the bar for analysing spreads, half for the scenes' soundscapes (which exist only
  // once every spread is analysed), so the bar never moves backwards.
  let fraction = s.totalSpreads ? (0.5 * analysed) / s.totalSpreads : 0;
  if (s.scenesCreated > 0) fraction = 0.5 + (0.5 * (s.soundscapesGenerated + b.progress.soundscapesFailed)) / s.scenesCreated;
  if (BOOK_TERMINAL.includes(b.status)) fraction = 1;
  const failed = b.progress.spreadsFailed ? ` • ${red(`${b.progress.spreadsFailed} failed`)}` : '';
  const scenes = s.scenesCreated ? ` • ${s.scenesCreated} scenes • ${s.soundscapesGenerated}/${s.scenesCreated} soundscapes` : '';
  return { fraction, text: `${s.processedSpreads}/${s.totalSpreads} spreads${failed}${scenes} · ${LABEL[b.status] ?? b.status}` };
}

const visible = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');

let drawnLines = 0;
const lastPlain: string[] = [];
function draw(rows: { name: string; fraction: number; text: string }[]): void {
  if (tty) {
    const width = process.stdout.columns || 100;
    let out = drawnLines ? `\x1b[${drawnLines}A` : '';
    for (const row of rows) {
      let line = `${bold(row.name.padEnd(13))}${bar(row.fraction)} ${percent(row.fraction)}  ${row.text}`;
      // A wrapped line would break the cursor arithmetic: cut at the terminal's width.
      if (visible(line).length > width - 1) line = visible(line).slice(0, width - 2) + '…';
      out += `\x1b[2K${line}\n`;
    }
    process.stdout.write(out);
    drawnLines = rows.length;
    return;
  }
  rows.forEach((row, i) => {
    const line = `${row.name}: ${percent(row.fraction).trim()} ${row.text}`;
    if (lastPlain[i] !== line) {
      lastPlain[i] = line;
      console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Main

let own: OwnServer | null = null;

async function main(): Promise<void> {
  const started = Date.now();
  const given = args.token ?? process.env.DEMO_TOKEN;
  if (await healthy(baseUrl)) {
    if (!given) {
      fail(
        `soundqueue is running at ${baseUrl}, so the demo needs its token:\n` +
          `  npm run demo -- --token <token>     (or DEMO_TOKEN=<token> npm run demo)\n` +
          `\`npm start\` prints a dev token under "Dev token"; or stop that server and the demo starts its own.`,
      );
    }
    token = given!;
    console.log(`Using the soundqueue at ${baseUrl}.`);
  } else {
    const url = new URL(baseUrl);
    if (!['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)) fail(`nothing answers ${baseUrl}/healthz, and the demo only starts a server on this machine`);
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    console.log(`Nothing answers at ${baseUrl}: starting \`npm start\` (PORT=${port})…`);
    own = startServer(port);
    token = await waitForServer(own, baseUrl, given);
    console.log(`Started (pid ${own.child.pid}).`);
  }

  // Fails early and plainly on a wrong token.
  await call('GET', '/v1/audio/variants');

  const batch = await call('POST', '/v1/audio/batches', { visionId: 'demo-vision', sections: SAMPLE_VISION, variants: SAMPLE_VARIANTS, voice: SAMPLE_VOICE }, { 'Idempotency-Key': `demo-${randomUUID()}` });
  const sample = sampleBook();
  const book = await call('POST', '/v1/books', sample);
  console.log(
    `\nSubmitted a vision of ${SAMPLE_VISION.length} sections × ${SAMPLE_VARIANTS.length} variants (${SAMPLE_VARIANTS.join(', ')}): batch ${batch.id}\n` +
      `Submitted "${sample.title}", ${sample.pages.length} pages: book ${book.bookId}\n`,
  );

  let b = batch;
  let k = book;
  const finishedAt: { batch?: number; book?: number } = {};
  for (;;) {
    if (!BATCH_TERMINAL.includes(b.status)) b = await call('GET', `/v1/audio/batches/${batch.id}`);
    if (!BOOK_TERMINAL.includes(k.status)) k = await call('GET', `/v1/books/${book.bookId}`);
    if (BATCH_TERMINAL.includes(b.status)) finishedAt.batch ??= Date.now();
    if (BOOK_TERMINAL.includes(k.status)) finishedAt.book ??= Date.now();
    draw([
      { name: 'Voice tracks', ...batchLine(b) },
      { name: 'Book', ...bookLine(k) },
    ]);
    if (finishedAt.batch && finishedAt.book) break;
    await new Promise((r) => setTimeout(r, 500));
  }

  // ---- Where things are
  const full = await call('GET', `/v1/audio/batches/${batch.id}`);
  const { scenes } = await call('GET', `/v1/books/${book.bookId}/scenes`);
  const secs = (at: number) => `${((at - started) / 1000).toFixed(1)} s`;
  console.log(
    `\n${bold('Done.')} Voice tracks: ${LABEL[full.status]} after ${secs(finishedAt.batch!)}; book: ${LABEL[k.status]} after ${secs(finishedAt.book!)}.`,
  );
  if (full.error_message) console.log(red(`  batch: ${full.error_message}`));
  if (k.warning || k.error) console.log(red(`  book: ${k.warning ?? k.error}`));

  const driver = (process.env.STORAGE_DRIVER ?? 'local').trim().toLowerCase(); // read as the config reads it
  console.log(`\n${bold('Files')}`);
  if (driver === 's3') {
    console.log(`  in the S3 bucket ${process.env.S3_BUCKET ?? '(S3_BUCKET)'}${process.env.S3_PREFIX ? ` under ${process.env.S3_PREFIX}` : ''}: tracks/${batch.id}/ and soundscapes/${book.bookId}/`);
  } else {
    const configured = process.env.STORAGE_DIR ?? './data';
    const dir = isAbsolute(configured) ? configured : resolve(repoRoot, configured);
    const where = own ? '' : ` ${dim("(the server's STORAGE_DIR; this assumes it matches yours)")}`;
    console.log(`  STORAGE_DIR=${configured} → ${dir}${where}`);
    for (const sub of [`tracks/${batch.id}`, `soundscapes/${book.bookId}`]) {
      const path = resolve(dir, sub);
      const count = existsSync(path) ? readdirSync(path).filter((f) => f.endsWith('.mp3')).length : 0;
      console.log(`  ${path}/  ${dim(`${count} mp3 file${count === 1 ? '' : 's'}`)}`);
    }
  }

  console.log(`\n${bold('A few tracks and soundscapes through the API')} ${dim('(they need the Authorization header)')}`);
  const tracks = (full.tracks as any[]).filter((t) => t.audio_url);
  const oneEach = SAMPLE_VARIANTS.map((v) => tracks.find((t) => t.variant_id === v)).filter(Boolean);
  for (const t of oneEach) console.log(`  ${(t.section_title + ' · ' + t.variant_id).padEnd(24)} ${baseUrl}${t.audio_url}`);
  for (const s of (scenes as any[]).filter((x) => x.soundscape?.audioUrl).slice(0, 3)) {
    console.log(`  ${`scene ${s.index + 1} · p. ${s.firstPage}–${s.lastPage}`.padEnd(24)} ${baseUrl}${s.soundscape.audioUrl}`);
  }
  const example = oneEach[0] ?? null;
  if (example) console.log(dim(`  e.g.  curl -H "Authorization: Bearer $TOKEN" -o track.mp3 ${baseUrl}${example.audio_url}`));

  console.log(`\n${bold('The status page')}`);
  console.log(`  ${baseUrl}/?batch=${batch.id}`);
  console.log(`  ${baseUrl}/?book=${book.bookId}`);
  if (own && !args.keep) {
    console.log(dim(`  The demo's server stops now: run \`npm start\`, open a link above and paste the dev token it prints (same demo-user).`));
  } else {
    console.log(dim(`  Paste the token into the page once; it remembers it.`));
  }
  // The dev token is signed with a key made at start, so it is only worth showing while
  // the server that made it keeps running.
  if (own && args.keep) console.log(`\nIts dev token (user demo-user): ${token}`);
}

async function shutdown(code: number): Promise<never> {
  if (own) {
    if (args.keep && code === 0) {
      console.log(`\nThe server keeps running (pid ${own.child.pid}); Ctrl-C stops it.`);
      await new Promise<void>((done) => {
        process.once('SIGINT', done);
        process.once('SIGTERM', done);
      });
    }
    console.log(dim('Stopping the server the demo started…'));
    await stopServer(own);
  }
  process.exit(code);
}

let interrupted = false;
const onSignal = () => {
  if (interrupted) return;
  interrupted = true;
  console.log('\nInterrupted.');
  void shutdown(130);
};
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);

main().then(
  () => {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    return shutdown(0);
  },
  (error) => {
    console.error(`\n${red('demo failed:')} ${error instanceof DemoError ? error.message : (error as Error).stack ?? String(error)}`);
    return shutdown(1);
  },
);
