import { existsSync } from 'node:fs';
import { get } from 'node:http';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fourSettingBook } from '../fixtures/books';
import { readJson, startTestApi, startTestWorker, tokenFor, type TestApi, type TestWorker } from '../helpers/app';
import { createTestEnv, type TestEnv } from '../helpers/services';

// The status page at `/`, end to end in Debian's Chromium driven by playwright-core (no
// browser download): a batch created and watched live, a track played, a reload that comes
// back to the same batch, then a book uploaded and its scene timeline played.

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const OUTPUT_DIR = join(process.cwd(), 'test-output');
const USER = 'browser-user';
const LONG = 120_000;

let env: TestEnv;
let api: TestApi;
let worker: TestWorker;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const pageErrors: string[] = [];
const audioRequests: { url: string; range: string | null }[] = [];

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium is not installed at ${CHROMIUM}. Run \`bash scripts/services.sh\` (as root it installs Debian's chromium with apt-get), ` +
        'or `sudo apt-get install chromium`, or set CHROMIUM_PATH to a Chromium binary.',
    );
  }
  env = await createTestEnv({ SOUNDSCAPE_SECONDS: '4' });
  api = await startTestApi(env.config);
  worker = await startTestWorker(env.config);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  context = await browser.newContext({ viewport: { width: 1366, height: 1000 } });
  // Records every value the counts line and the tracks' statuses take, to prove the page
  // moved through the batch live rather than only drawing its end.
  // (Browser code is written as a string: this project's TypeScript has no DOM types.)
  await context.addInitScript({
    content: `
      window.seen = { counts: [], trackStatuses: [], live: [], bookCounts: [] };
      document.addEventListener('DOMContentLoaded', () => {
        const record = (list, value) => { if (value && list[list.length - 1] !== value) list.push(value); };
        new MutationObserver(() => {
          record(window.seen.counts, document.querySelector('[data-testid="batch-counts"]')?.textContent);
          record(window.seen.live, document.querySelector('[data-testid="batch-live"]')?.dataset.state);
          record(window.seen.bookCounts, document.querySelector('[data-testid="book-counts"]')?.textContent);
          for (const row of document.querySelectorAll('[data-testid="track"]')) {
            const s = row.dataset.status;
            if (s && !window.seen.trackStatuses.includes(s)) window.seen.trackStatuses.push(s);
          }
        }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['data-status', 'data-state'] });
      });`,
  });
  page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`pageerror: ${error.message}`));
  page.on('request', (request) => {
    if (request.url().includes('playback_token=')) audioRequests.push({ url: request.url(), range: request.headers().range ?? null });
  });
  page.on('console', (message) => {
    if (message.type() === 'error') pageErrors.push(`console: ${message.text()}`);
  });
  // The page must work offline: anything not on the API's origin is refused and reported.
  await context.route('**/*', (route) => {
    if (route.request().url().startsWith(api.url)) return route.continue();
    pageErrors.push(`off-origin request: ${route.request().url()}`);
    return route.abort();
  });
}, LONG);

afterAll(async () => {
  await context?.close().catch(() => {});
  await browser?.close().catch(() => {});
  await worker?.close();
  await api?.close();
  await env?.cleanup();
});

const text = (locator: Locator) => locator.textContent().then((t) => t?.trim() ?? '');

async function screenshot(name: string) {
  await mkdir(OUTPUT_DIR, { recursive: true });
  await page.screenshot({ path: join(OUTPUT_DIR, name), fullPage: true });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Dom = any;

async function audioState(audio: Locator) {
  return audio.evaluate((a: Dom) => ({
    // Streamed from a playback URL (the audio URL with its own token), not a downloaded blob.
    playbackUrl: /\/audio\?playback_token=/.test(String(a.src)),
    error: a.error ? `${a.error.code}: ${a.error.message}` : null,
    metadata: a.readyState >= 1, // HAVE_METADATA: the browser decoded the file's header
    seconds: Number.isFinite(a.duration) ? Math.round(a.duration) : null,
  }));
}

const statuses = (rows: Locator, key: string) => rows.evaluateAll((els: Dom[], k: string) => els.map((e) => e.dataset[k] as string), key);

describe('the status page', () => {
  it('is served at / with its assets, content types and a short cache', async () => {
    const index = await fetch(`${api.url}/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(index.headers.get('cache-control')).toBe('public, max-age=60');
    expect(index.headers.get('content-security-policy')).toContain("script-src 'self'");
    // Audio streams from playback URLs on this origin: no blob: (or other) media source is allowed.
    expect(index.headers.get('content-security-policy')).toMatch(/(^|; )media-src 'self'(;|$)/);
    const js = await fetch(`${api.url}/status-page/app.js`);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    const css = await fetch(`${api.url}/status-page/styles.css`);
    expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');
    // Revalidation answers 304 (node:http: fetch adds Cache-Control: no-cache to conditional requests).
    const etag = css.headers.get('etag')!;
    const revalidated = await new Promise<number>((done, failed) =>
      get(`${api.url}/status-page/styles.css`, { headers: { 'If-None-Match': etag } }, (res) => done(res.resume().statusCode!)).on('error', failed),
    );
    expect(revalidated).toBe(304);
    // Nothing else on disk is reachable through it.
    expect((await fetch(`${api.url}/status-page/status-page.routes.ts`)).status).toBe(404);
    expect((await fetch(`${api.url}/status-page/..%2F..%2Fapp.ts`)).status).toBe(404);
  });

  it('creates a batch, shows it advancing to Complete, plays a track, and comes back to it after a reload', async () => {
    await page.goto(`${api.url}/`);
    await page.getByTestId('token-input').fill(await tokenFor(USER));
    await page.getByTestId('token-save').click();
    await expect.poll(() => text(page.getByTestId('token-who'))).toContain(`user ${USER}`);

    // Pickers come from the API's catalogs.
    await page.getByTestId('variant-sleep').check();
    await expect(page.getByTestId('variant-voice_only').isChecked()).resolves.toBe(true);
    await page.getByTestId('section-count').selectOption('3');
    await page.getByTestId('voice-select').selectOption('alloy');
    await expect.poll(() => text(page.getByTestId('batch-summary'))).toBe('3 sections × 2 variants = 6 tracks');
    await page.getByTestId('create-batch').click();

    await page.waitForURL(/[?&]batch=[0-9a-f-]{36}/);
    const batchId = new URL(page.url()).searchParams.get('batch')!;
    await page.getByTestId('batch-view').waitFor();
    await expect.poll(() => text(page.getByTestId('batch-status')), { timeout: LONG, interval: 200 }).toBe('Complete');
    await expect.poll(() => text(page.getByTestId('batch-counts'))).toBe('6 completed • 0 failed • 0 pending');
    expect(await page.getByTestId('batch-progress').getAttribute('aria-valuenow')).toBe('100');
    await expect.poll(() => page.getByTestId('batch-live').getAttribute('data-state')).toBe('done');

    // It got there live, through the event stream: the counts moved and tracks passed
    // through the in-flight states; it never had to fall back to polling.
    const seen = (await page.evaluate('window.seen')) as { counts: string[]; trackStatuses: string[]; live: string[] };
    const { counts: seenCounts, trackStatuses: seenStatuses, live: seenLive } = seen;
    expect(seenCounts.length, seenCounts.join(' | ')).toBeGreaterThan(2);
    expect(seenCounts[0]).toMatch(/ [1-6] pending$/);
    expect(seenCounts.at(-1)).toBe('6 completed • 0 failed • 0 pending');
    expect(seenStatuses).toEqual(expect.arrayContaining(['pending', 'completed']));
    expect(seenStatuses.some((s) => s === 'generating' || s === 'mixing'), seenStatuses.join(',')).toBe(true);
    expect(seenLive).toContain('live');
    expect(seenLive).not.toContain('polling');

    // The track details: six green rows, grouped by variant, no errors, no retry offered,
    // no cancel once it is done, and no redirect away from the batch.
    const rows = page.getByTestId('track');
    await expect.poll(() => rows.count()).toBe(6);
    expect(await statuses(rows, 'status')).toEqual(Array(6).fill('completed'));
    expect(await page.getByTestId('variant-group').count()).toBe(2);
    expect(await page.getByTestId('retry-failed').isVisible()).toBe(false);
    expect(await page.getByTestId('cancel-batch').isVisible()).toBe(false);
    expect(new URL(page.url()).searchParams.get('batch')).toBe(batchId);

    // Play: the page mints a playback URL and the browser streams the file from it.
    const first = rows.first();
    await first.getByTestId('play-track').click();
    const audio = first.getByTestId('track-audio');
    await audio.waitFor();
    await expect.poll(() => audioState(audio), { timeout: 20_000 }).toMatchObject({ playbackUrl: true, error: null, metadata: true });
    expect((await audioState(audio)).seconds).toBeGreaterThan(0);
    // The browser's own media requests, with no Authorization header: it asked for ranges.
    expect(audioRequests.some((r) => r.range !== null), JSON.stringify(audioRequests)).toBe(true);
    expect(await first.getByTestId('track-error').isVisible()).toBe(false);

    // The API agrees with the page.
    const stored = await readJson(await api.request(`/v1/audio/batches/${batchId}`, { user: USER }));
    expect(stored).toMatchObject({ status: 'completed', tracks_completed: 6, tracks_failed: 0, tracks_pending: 0 });

    await screenshot('status-page.png');

    // A reload comes back to the same batch, from the URL (and the saved token).
    await page.reload();
    await page.getByTestId('batch-view').waitFor();
    expect(new URL(page.url()).searchParams.get('batch')).toBe(batchId);
    await expect.poll(() => text(page.getByTestId('batch-meta'))).toContain(batchId);
    await expect.poll(() => text(page.getByTestId('batch-status'))).toBe('Complete');
    expect(await text(page.getByTestId('batch-counts'))).toBe('6 completed • 0 failed • 0 pending');
    await expect.poll(() => page.getByTestId('track').count()).toBe(6);
    // The recent list has it, marked as the current one.
    await expect.poll(() => page.locator(`[data-testid="recent-batch"][data-id="${batchId}"]`).getAttribute('class')).toContain('current');
  });

  it('says plainly what the API refused', async () => {
    await page.goto(`${api.url}/?batch=00000000-0000-4000-8000-000000000000`);
    await expect.poll(() => text(page.getByTestId('page-error'))).toBe('batch not found [not_found, HTTP 404]');
    await page.getByTestId('token-input').fill('not-a-token');
    await page.getByTestId('token-save').click();
    await expect.poll(() => text(page.getByTestId('page-error'))).toMatch(/^Your token was refused: token .+\. Paste a fresh one/);
    await page.getByTestId('token-input').fill(await tokenFor(USER));
    await page.getByTestId('token-save').click();
  });

  it('lets the #token of a link replace a saved token only when the user agrees', async () => {
    const saved = () => page.evaluate(() => (globalThis as unknown as { localStorage: { getItem(key: string): string | null } }).localStorage.getItem('soundqueue.token'));
    // The token the tests before saved (the user's own; a token made now could differ in iat).
    const own = await saved();
    expect(own).toMatch(/^ey/);
    const strangers = await tokenFor('someone-else');
    const answers: boolean[] = [false, true];
    const dialogs: string[] = [];
    const onDialog = (dialog: { message(): string; accept(): Promise<void>; dismiss(): Promise<void> }) => {
      dialogs.push(dialog.message());
      return answers.shift() ? dialog.accept() : dialog.dismiss();
    };
    page.on('dialog', onDialog);
    try {
      // A fresh load each time (a link opened in the tab): only the hash changing would not
      // load the page again.
      const open = async () => {
        await page.goto('about:blank');
        await page.goto(`${api.url}/#token=${strangers}`);
      };
      // Declined: the saved token stays, and the link's token leaves the address bar anyway.
      await open();
      await expect.poll(() => dialogs.length).toBe(1);
      expect(dialogs[0]).toMatch(/different token/);
      expect(await saved()).toBe(own);
      expect(page.url()).not.toContain('token=');
      // Accepted: replaced.
      await open();
      await expect.poll(() => dialogs.length).toBe(2);
      await expect.poll(saved).toBe(strangers);
      // The same token again asks nothing.
      await open();
      await page.waitForLoadState('load');
      expect(dialogs).toHaveLength(2);
    } finally {
      page.off('dialog', onDialog);
    }
    await page.goto(`${api.url}/`);
    await page.getByTestId('token-input').fill(own!);
    await page.getByTestId('token-save').click();
    await expect.poll(saved).toBe(own);
  });

  it('uploads a book, shows its spreads advancing, then plays a scene from the timeline', async () => {
    await page.goto(`${api.url}/`);
    await page.getByTestId('token-input').fill(await tokenFor(USER));
    await page.getByTestId('token-save').click();
    await page.getByTestId('tab-books').click();
    // No worker while the book is submitted, so the page is watching before anything moves
    // (the local analyzer finishes four spreads faster than a page connects).
    await worker.close();
    // Forest pages, then sea pages: two scenes (form feeds are page breaks).
    const pages = fourSettingBook().slice(6, 14);
    await page.getByTestId('book-file').setInputFiles({ name: 'two-settings.txt', mimeType: 'text/plain', buffer: Buffer.from(pages.join('\f')) });
    await page.getByTestId('book-title').fill('Forest and sea');
    await page.getByTestId('upload-book').click();

    await page.waitForURL(/[?&]book=[0-9a-f-]{36}/);
    const bookId = new URL(page.url()).searchParams.get('book')!;
    await page.getByTestId('book-view').waitFor();
    expect(await text(page.getByTestId('book-title-view'))).toBe('Forest and sea');
    await expect.poll(() => text(page.getByTestId('book-status'))).toBe('In Progress');
    expect(await text(page.getByTestId('book-counts'))).toBe('0 of 4 spreads processed • 0 failed • 0 scenes');
    await expect.poll(() => page.getByTestId('book-live').getAttribute('data-state')).toBe('live');
    worker = await startTestWorker(env.config);
    await expect.poll(() => text(page.getByTestId('book-status')), { timeout: LONG, interval: 200 }).toBe('Ready');
    expect(await text(page.getByTestId('book-counts'))).toMatch(/^4 of 4 spreads processed • 0 failed • 2 scenes • 2 of 2 soundscapes$/);

    const scenes = page.getByTestId('scene');
    await expect.poll(() => scenes.count(), { timeout: 20_000 }).toBe(2);
    await expect
      .poll(() => statuses(scenes, 'soundscapeStatus'), { timeout: 20_000 })
      .toEqual(['completed', 'completed']);
    expect(await text(scenes.first())).toContain('pages 1–');
    // Every spread's analysis arrived live, and the counts moved through the steps.
    await expect.poll(() => page.getByTestId('spread-feed').locator('li').count()).toBe(4);
    expect(await statuses(page.getByTestId('spread-grid').locator('.cell'), 'index')).toEqual(['0', '1', '2', '3']);
    expect(await page.getByTestId('spread-grid').locator('.cell.status-analyzed').count()).toBe(4);
    const bookCounts = ((await page.evaluate('window.seen')) as { bookCounts: string[] }).bookCounts;
    expect(bookCounts[0]).toBe('0 of 4 spreads processed • 0 failed • 0 scenes');
    expect(bookCounts.some((c) => /^[123] of 4 spreads processed/.test(c)), bookCounts.join(' | ')).toBe(true);
    expect(bookCounts.at(-1)).toBe('4 of 4 spreads processed • 0 failed • 2 scenes • 2 of 2 soundscapes');

    const scene = scenes.first();
    await scene.getByTestId('play-soundscape').click();
    const audio = scene.getByTestId('soundscape-audio');
    await audio.waitFor();
    await expect.poll(() => audioState(audio), { timeout: 20_000 }).toMatchObject({ playbackUrl: true, error: null, metadata: true });
    expect((await audioState(audio)).seconds).toBeGreaterThanOrEqual(3);
    await screenshot('status-page-books.png');

    // A reload comes back to the books tab and the same book.
    await page.reload();
    await page.getByTestId('book-view').waitFor();
    expect(new URL(page.url()).searchParams.get('book')).toBe(bookId);
    expect(await page.locator('#panel-books').isVisible()).toBe(true);
    expect(await page.getByTestId('tab-books').getAttribute('aria-selected')).toBe('true');
    await expect.poll(() => page.getByTestId('scene').count()).toBe(2);
    expect(await text(page.getByTestId('book-status'))).toBe('Ready');
  });

  it('raised no script errors and made no request off its origin', () => {
    // Chromium logs every 4xx answer as "Failed to load resource"; the test provoked those
    // on purpose (a wrong id, a bad token) and checked what the page said about them.
    expect(pageErrors.filter((e) => !/Failed to load resource: the server responded with a status of 40[14]/.test(e))).toEqual([]);
  });
});
