// soundqueue status page: plain browser JavaScript, no build step, no network beyond this API.
// It reads the API's JSON (apps/api/src/batches/batch.view.ts, books/book.view.ts) and its
// event streams (apps/api/src/events/sse.ts): a `snapshot` with the full state, then changes.
'use strict';

(() => {
  // ---------------------------------------------------------------------------------------
  // Sample content. scripts/sample-content.ts holds the demo's copy; this one is the page's
  // own (browser code cannot import TypeScript modules), kept short on purpose.

  const SAMPLE_VISION = [
    ['forward', 'Forward', 'This is the life I am choosing, one clear day at a time. I wrote it down so I can hear it, believe it and live it. Everything that follows is already on its way to me.'],
    ['fun_recreation', 'Fun & recreation', 'I make time to play every single week. I laugh easily, I try new games and I say yes to adventures with friends. Joy is part of my routine, not a reward at the end of it.'],
    ['health_vitality', 'Health & vitality', 'My body is strong, rested and full of energy. I move every morning, I eat food that fuels me and I sleep deeply. I feel light and capable from the moment I wake.'],
    ['travel_adventure', 'Travel & adventure', 'I explore a new place every season. I have walked coastal paths, slept under mountain stars and tasted food in busy markets far from home. The world feels open and friendly to me.'],
    ['career', 'Career', 'I do work that matters and I do it well. People trust my judgement and bring me their hardest problems. I grow a little more skilled every month.'],
    ['finances', 'Finances', 'Money flows to me steadily and I manage it with calm confidence. My savings grow every month and I give generously. I feel secure and free.'],
    ['relationships', 'Relationships', 'I am surrounded by people who lift me up. I listen with my whole attention and I speak kindly. My closest friendships grow deeper every year.'],
    ['family', 'Family', 'My family feels my love in small daily ways. We share meals, stories and quiet evenings together. Home is where we recharge and cheer each other on.'],
    ['home', 'Home', 'My home is bright, calm and uncluttered. Every room has a purpose and a little beauty. I love coming back to it at the end of the day.'],
    ['learning', 'Learning', 'I stay curious and I learn something new every day. I read, I ask questions and I practise until new skills feel natural. My mind is sharp and playful.'],
    ['creativity', 'Creativity', 'I create something with my hands or my words every week. Ideas come to me easily and I give them room to grow. Making things is how I feel most alive.'],
    ['community', 'Community', 'I am a generous part of my community. I know my neighbours by name and I show up when someone needs help. Together we make this place better.'],
    ['spirituality', 'Spirituality', 'I begin each day in stillness and gratitude. I feel connected to something larger than myself. Peace is always one slow breath away.'],
    ['conclusion', 'Conclusion', 'This is my vision and I am living it now. Each day I take one more step toward it with patience and courage. I am grateful for all of it.'],
  ].map(([key, title, text]) => ({ key, title, text }));

  /** A few pages in three settings, so the analysis finds scene changes. */
  function sampleBookText() {
    const forest = 'Mara walked into the forest at dawn. Oak and pine trees closed over the path, the moss was wet and the leaves dripped. Birds called from every branch and a deer watched her from a clearing in the woods.';
    const sea = 'By noon the ship left the harbour. Waves broke against the hull, salt spray crossed the deck and the crew hauled on the rigging while gulls wheeled above the mast. The captain shouted orders into the wind.';
    const city = 'That night the city glowed. Taxis and buses crawled along the avenue, neon signs buzzed above the street and a crowd spilled out of a cafe onto the pavement. A siren wailed somewhere downtown.';
    const page = (paragraph) => Array.from({ length: 7 }, () => paragraph).join('\n\n');
    return [forest, forest, sea, sea, city, city].map(page).join('\f');
  }

  // ---------------------------------------------------------------------------------------
  // Small helpers

  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'soundqueue.token';
  const BATCH_TERMINAL = ['completed', 'partial_success', 'failed', 'cancelled'];
  const BOOK_TERMINAL = ['ready', 'failed'];
  const STREAM_EVENTS = [
    'snapshot',
    'track.updated', 'track.failed', 'batch.updated', 'batch.retried',
    'batch.completed', 'batch.partial_success', 'batch.failed', 'batch.cancelled',
    'spread.updated', 'soundscape.updated', 'book.updated', 'book.ready', 'book.failed',
  ];
  const BATCH_BADGE = { pending: 'In Progress', processing: 'In Progress', completed: 'Complete', partial_success: 'Partial Success', failed: 'Failed', cancelled: 'Cancelled' };
  const BOOK_BADGE = { pending: 'In Progress', processing: 'In Progress', ready: 'Ready', failed: 'Failed' };
  const TRACK_LABEL = { pending: 'Pending', generating: 'Generating voice', mixing: 'Mixing', completed: 'Completed', failed: 'Failed', cancelled: 'Cancelled' };
  const SOUNDSCAPE_LABEL = { pending: 'Pending', generating: 'Generating', completed: 'Completed', failed: 'Failed' };

  /**
   * Events are published after their change commits, so two changes can arrive in the other
   * order; each batch, track and book state carries its row's `version`, raised by every
   * change. A state older than the one shown (a lower version) is ignored.
   */
  const older = (state, shown) => Boolean(shown) && typeof state.version === 'number' && typeof shown.version === 'number' && state.version < shown.version;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const child of children.flat()) if (child !== null && child !== undefined && child !== false) node.append(child);
    return node;
  }
  const show = (node, visible) => { node.hidden = !visible; };
  const pct = (part, whole) => (whole > 0 ? Math.round((part / whole) * 1000) / 10 : 0);
  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '');
  const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;
  const duration = (ms) => {
    if (ms === null || ms === undefined) return '';
    const s = Math.round(ms / 1000);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  };
  const ago = (iso) => {
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 60) return 'just now';
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return new Date(iso).toLocaleDateString();
  };
  const newKey = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`);

  // ---------------------------------------------------------------------------------------
  // The API: Bearer token, and errors in the shape {"error":{"code","message","details"}}.

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  let token = localStorage.getItem(TOKEN_KEY) || '';

  async function errorFrom(res) {
    let body = null;
    try { body = await res.json(); } catch { /* not JSON */ }
    const e = body && body.error;
    return new ApiError(res.status, (e && e.code) || `http_${res.status}`, (e && e.message) || res.statusText || `HTTP ${res.status}`, e && e.details);
  }

  async function api(path, { method = 'GET', json, body, headers = {} } = {}) {
    if (!token) throw new ApiError(401, 'no_token', 'paste an API token first');
    const h = { Authorization: `Bearer ${token}`, ...headers };
    if (json !== undefined) h['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { method, headers: h, body: json !== undefined ? JSON.stringify(json) : body });
    } catch (error) {
      throw new ApiError(0, 'network', `could not reach the API (${error.message})`);
    }
    if (!res.ok) throw await errorFrom(res);
    return res.status === 204 ? null : res.json();
  }

  function describe(error) {
    if (error instanceof ApiError) {
      if (error.code === 'no_token') return 'Paste an API token first (npm start prints a dev token).';
      if (error.status === 401) return `Your token was refused: ${error.message}. Paste a fresh one (npm start prints a dev token).`;
      if (error.status === 0) return `Could not reach the API: ${error.message}.`;
      const details = Array.isArray(error.details) && error.details.length > 1 ? ` (${error.details.map((d) => `${d.path}: ${d.message}`).join('; ')})` : '';
      return `${error.message}${details} [${error.code}, HTTP ${error.status}]`;
    }
    return String((error && error.message) || error);
  }
  function showError(node, error) {
    node.textContent = describe(error);
    show(node, true);
    if (error instanceof ApiError && error.status === 401) $('token-input').focus();
  }
  const clearError = (node) => { node.textContent = ''; show(node, false); };

  // ---------------------------------------------------------------------------------------
  // Event streams: EventSource with a short-lived query token; a fresh token on every
  // reconnect; polling every 2 s when streams keep failing.

  function watch({ path, poll, onSnapshot, onEvent, liveNode, onFatal }) {
    let source = null;
    let stopped = false;
    let failures = 0;
    let lastEventId = null;
    let timer = null;
    const live = (text, cls) => { liveNode.textContent = text; liveNode.dataset.state = cls; };
    const finish = () => {
      stopped = true;
      if (source) source.close();
      clearTimeout(timer);
      live('Live updates: finished', 'done');
    };

    async function connect() {
      if (stopped) return;
      if (typeof EventSource === 'undefined') return startPolling();
      live('Live updates: connecting…', 'connecting');
      let streamToken;
      try {
        streamToken = (await api('/v1/stream-tokens', { method: 'POST' })).token;
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) return fatal(error);
        return failed();
      }
      if (stopped) return;
      const query = new URLSearchParams({ access_token: streamToken });
      if (lastEventId) query.set('lastEventId', lastEventId);
      const es = new EventSource(`${path}?${query}`);
      source = es;
      for (const type of STREAM_EVENTS) {
        es.addEventListener(type, (message) => {
          if (stopped || source !== es) return;
          if (message.lastEventId) lastEventId = message.lastEventId;
          failures = 0;
          live('● Live updates', 'live');
          const data = JSON.parse(message.data);
          const terminal = type === 'snapshot' ? onSnapshot(data) : onEvent(type, data);
          if (terminal) finish();
        });
      }
      es.onerror = () => {
        if (stopped || source !== es) return;
        // The browser would retry with the same URL, whose token may have expired: close
        // and reconnect ourselves with a fresh token, resuming from the last event id.
        es.close();
        failed();
      };
    }

    function failed() {
      failures += 1;
      if (failures >= 4) return startPolling();
      live('Live updates: reconnecting…', 'reconnecting');
      timer = setTimeout(connect, Math.min(500 * 2 ** failures, 8000));
    }

    function startPolling() {
      live('Live updates: stream unavailable, polling every 2 s', 'polling');
      const tick = async () => {
        if (stopped) return;
        try {
          if (onSnapshot(await poll())) return finish();
        } catch (error) {
          if (error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 429) return fatal(error);
        }
        timer = setTimeout(tick, 2000);
      };
      tick();
    }

    function fatal(error) {
      stopped = true;
      if (source) source.close();
      clearTimeout(timer);
      live('Live updates: stopped', 'error');
      onFatal(error);
    }

    connect();
    return { stop: () => { stopped = true; if (source) source.close(); clearTimeout(timer); } };
  }

  // ---------------------------------------------------------------------------------------
  // Audio: an <audio src> cannot send the Authorization header, so the page asks for a
  // playback URL (POST /v1/playback-urls): the audio URL with a token good for that file only.
  // The player then streams it and seeks with HTTP Range like any file.

  async function play(button, holder, url, testid, errorNode) {
    let audio = holder.querySelector('audio');
    if (audio && !audio.paused) return audio.pause();
    for (const other of document.querySelectorAll('audio')) if (!holder.contains(other)) other.pause();
    if (!audio) {
      audio = el('audio', { controls: true, preload: 'auto', 'data-testid': testid });
      audio.addEventListener('play', () => { button.textContent = 'Pause'; });
      audio.addEventListener('pause', () => { button.textContent = 'Play'; });
      audio.addEventListener('ended', () => { button.textContent = 'Play'; });
      // A failed load (an expired URL, audio gone): say so, and mint a new URL on the next Play.
      audio.addEventListener('error', () => {
        audio.removeAttribute('src');
        showError(errorNode, new ApiError(0, 'playback', 'the audio could not be played; press Play to try again'));
      });
      holder.append(audio);
    }
    if (!audio.getAttribute('src')) {
      button.disabled = true;
      button.textContent = 'Loading…';
      try {
        const minted = await api('/v1/playback-urls', { method: 'POST', json: { audio_url: url } });
        audio.src = minted.url;
        clearError(errorNode);
      } catch (error) {
        showError(errorNode, error);
        return;
      } finally {
        button.disabled = false;
        button.textContent = 'Play';
      }
    }
    try { await audio.play(); } catch { /* autoplay refused: the controls are there */ }
  }

  // ---------------------------------------------------------------------------------------
  // Token

  function tokenClaims(t) {
    try {
      const part = t.split('.')[1];
      return JSON.parse(atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=')));
    } catch {
      return null;
    }
  }

  function renderToken() {
    $('token-input').value = token;
    const claims = token ? tokenClaims(token) : null;
    const who = $('token-who');
    if (!token) who.textContent = 'no token yet';
    else if (!claims) who.textContent = 'service token';
    else {
      const expired = claims.exp && claims.exp * 1000 < Date.now();
      who.textContent = `user ${claims.sub}${claims.exp ? `, ${expired ? 'expired' : 'expires'} ${new Date(claims.exp * 1000).toLocaleString()}` : ''}`;
      who.classList.toggle('warn', Boolean(expired));
    }
  }

  function setToken(value) {
    token = value.trim();
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
    renderToken();
    clearError($('page-error'));
    loadEverything();
  }

  // ---------------------------------------------------------------------------------------
  // URL: ?batch=<id>, ?book=<id> (also accepted after #), tab=books when it is not implied.

  const view = { tab: 'batches', batchId: null, bookId: null };

  function readUrl() {
    const q = new URLSearchParams(location.search);
    const h = new URLSearchParams(location.hash.slice(1));
    const batchId = q.get('batch') || h.get('batch');
    const bookId = q.get('book') || h.get('book');
    const tab = q.get('tab') || h.get('tab');
    return { batchId, bookId, tab: tab === 'books' || tab === 'batches' ? tab : bookId && !batchId ? 'books' : 'batches' };
  }

  function writeUrl(push) {
    const q = new URLSearchParams();
    if (view.batchId) q.set('batch', view.batchId);
    if (view.bookId) q.set('book', view.bookId);
    const implied = view.bookId && !view.batchId ? 'books' : 'batches';
    if (view.tab !== implied) q.set('tab', view.tab);
    const url = `${location.pathname}${[...q].length ? `?${q}` : ''}`;
    if (url === `${location.pathname}${location.search}` && !location.hash) return;
    history[push ? 'pushState' : 'replaceState'](null, '', url);
  }

  function selectTab(tab, push = false) {
    view.tab = tab;
    for (const name of ['batches', 'books']) {
      $(`tab-${name}`).setAttribute('aria-selected', String(name === tab));
      show($(`panel-${name}`), name === tab);
    }
    writeUrl(push);
  }

  // ---------------------------------------------------------------------------------------
  // Voice tracks: the form

  let variants = [];
  let voices = [];
  let idempotencyKey = newKey();

  function renderSectionCount() {
    const select = $('section-count');
    select.replaceChildren(...SAMPLE_VISION.map((_, i) => el('option', { value: i + 1, text: `${i + 1} of ${SAMPLE_VISION.length}` })));
    select.value = String(SAMPLE_VISION.length);
    renderSamplePreview();
  }

  function renderSamplePreview() {
    const n = Number($('section-count').value);
    $('sample-preview').replaceChildren(...SAMPLE_VISION.slice(0, n).map((s) => el('li', {}, el('strong', { text: s.title }), ` ${s.text}`)));
    renderBatchSummary();
  }

  function chosenVariants() {
    return [...document.querySelectorAll('#variant-list input:checked')].map((i) => i.value);
  }

  function renderBatchSummary() {
    const n = Number($('section-count').value);
    const v = chosenVariants().length;
    $('batch-summary').textContent = `${n} section${n === 1 ? '' : 's'} × ${v} variant${v === 1 ? '' : 's'} = ${n * v} track${n * v === 1 ? '' : 's'}`;
  }

  async function loadCatalog() {
    try {
      const [v, s] = await Promise.all([api('/v1/audio/variants'), api('/v1/audio/voices')]);
      variants = v.variants;
      voices = s.voices;
    } catch (error) {
      $('variant-list').replaceChildren(el('span', { class: 'muted', text: 'variants load once a token is accepted' }));
      throw error;
    }
    $('variant-list').replaceChildren(
      ...variants.map((v) =>
        el('label', { class: 'check' },
          el('input', { type: 'checkbox', value: v.id, 'data-testid': `variant-${v.id}`, checked: v.id === 'voice_only', onchange: renderBatchSummary }),
          el('span', {}, el('span', { class: 'check-name', text: v.name }), el('span', { class: 'muted small check-description', text: v.description }))),
      ),
    );
    const voice = $('voice-select');
    const previous = voice.value;
    voice.replaceChildren(...voices.map((v) => el('option', { value: v.id, text: `${v.label} — ${v.description}` })));
    if (previous && voices.some((v) => v.id === previous)) voice.value = previous;
    renderBatchSummary();
  }

  async function createBatchFromForm(event) {
    event.preventDefault();
    const errorNode = $('batch-form-error');
    clearError(errorNode);
    const chosen = chosenVariants();
    if (chosen.length === 0) return showError(errorNode, new Error('Choose at least one variant.'));
    const n = Number($('section-count').value);
    const button = $('create-batch');
    button.disabled = true;
    try {
      const batch = await api('/v1/audio/batches', {
        method: 'POST',
        // One key per intended batch: a double click or a retried request makes one batch.
        headers: { 'Idempotency-Key': idempotencyKey },
        json: { visionId: $('vision-id').value.trim(), sections: SAMPLE_VISION.slice(0, n), variants: chosen, voice: $('voice-select').value },
      });
      idempotencyKey = newKey();
      selectBatch(batch.id, true);
      refreshRecentBatches();
    } catch (error) {
      showError(errorNode, error);
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Voice tracks: the batch being watched

  let batch = null;
  let batchWatch = null;
  let trackRows = new Map();
  let refetchTimer = null;

  function selectBatch(id, push = false) {
    if (batchWatch) batchWatch.stop();
    batchWatch = null;
    batch = null;
    $('track-list').replaceChildren();
    trackRows = new Map();
    clearError($('batch-error'));
    clearError($('page-error'));
    view.batchId = id;
    selectTab('batches', push);
    show($('batch-empty'), !id);
    show($('batch-view'), false);
    markRecent('recent-batches', id);
    if (id) startBatchWatch(id);
  }

  async function startBatchWatch(id) {
    // A plain GET first: the page draws at once, and a wrong id or token says so plainly.
    try {
      const data = await api(`/v1/audio/batches/${encodeURIComponent(id)}`);
      if (view.batchId !== id) return;
      applyBatchSnapshot(data);
      if (BATCH_TERMINAL.includes(data.status)) {
        $('batch-live').textContent = 'Finished: nothing more will change';
        $('batch-live').dataset.state = 'done';
        return;
      }
    } catch (error) {
      if (view.batchId !== id) return;
      show($('batch-view'), false);
      show($('batch-empty'), true);
      return showError($('page-error'), error);
    }
    batchWatch = watch({
      path: `/v1/audio/batches/${encodeURIComponent(id)}/events`,
      poll: () => api(`/v1/audio/batches/${encodeURIComponent(id)}`),
      onSnapshot: (data) => applyBatchSnapshot(data),
      onEvent: applyBatchEvent,
      liveNode: $('batch-live'),
      onFatal: (error) => showError($('batch-error'), error),
    });
  }

  function applyBatchSnapshot(data) {
    if (data.id !== view.batchId) return false;
    if (batch && batch.id === data.id) {
      if (older(data, batch)) return BATCH_TERMINAL.includes(batch.status);
      // A track an event moved on since this state was read stays as the event left it.
      const shown = new Map((batch.tracks || []).map((t) => [t.id, t]));
      if (data.tracks) data.tracks = data.tracks.map((t) => (older(t, shown.get(t.id)) ? shown.get(t.id) : t));
    }
    batch = data;
    renderBatch();
    const terminal = BATCH_TERMINAL.includes(data.status);
    if (terminal) refreshRecentBatches();
    return terminal;
  }

  function refetchBatchSoon() {
    clearTimeout(refetchTimer);
    const id = view.batchId;
    refetchTimer = setTimeout(async () => {
      try {
        const data = await api(`/v1/audio/batches/${encodeURIComponent(id)}`);
        if (view.batchId === id) applyBatchSnapshot(data);
      } catch { /* the stream or the next event brings the state */ }
    }, 200);
  }

  function applyBatchEvent(type, d) {
    if (!batch) return false;
    if (type === 'track.updated' || type === 'track.failed') {
      const track = (batch.tracks || []).find((t) => t.id === d.trackId);
      if (!track) refetchBatchSoon();
      else if (!older(d, track)) {
        track.version = d.version;
        track.status = d.status;
        track.mix_status = d.mixStatus;
        track.duration_ms = d.durationMs;
        track.error_type = d.errorType;
        track.error_message = d.errorMessage;
        track.audio_url = d.status === 'completed' ? `/v1/audio/tracks/${track.id}/audio` : null;
      }
    } else if (older(d, batch)) {
      return false; // not even a terminal event: the batch has moved on since (a retry)
    } else if (type === 'batch.retried') {
      batch.version = d.version;
      batch.status = d.status;
      batch.run = d.run;
      refetchBatchSoon();
    } else if (type.startsWith('batch.')) {
      batch.version = d.version;
      batch.status = d.status;
      batch.tracks_completed = d.tracksCompleted;
      batch.tracks_failed = d.tracksFailed;
      batch.tracks_cancelled = d.tracksCancelled;
      batch.tracks_pending = d.tracksPending;
      batch.total_tracks_expected = d.totalTracksExpected;
      if ('errorMessage' in d) batch.error_message = d.errorMessage;
      if (d.completedAt) batch.completed_at = d.completedAt;
    }
    renderBatch();
    const terminal = ['batch.completed', 'batch.partial_success', 'batch.failed', 'batch.cancelled'].includes(type);
    if (terminal) refreshRecentBatches();
    return terminal;
  }

  const variantName = (id) => (variants.find((v) => v.id === id) || { name: id }).name;
  const voiceName = (id) => (voices.find((v) => v.id === id) || { label: id }).label;

  function countsLine(b) {
    const line = `${b.tracks_completed} completed • ${b.tracks_failed} failed • ${b.tracks_pending} pending`;
    return b.tracks_cancelled > 0 ? `${line} • ${b.tracks_cancelled} cancelled` : line;
  }

  function setBadge(node, status, labels) {
    node.textContent = labels[status] || status;
    node.className = `badge status-${status}`;
    node.dataset.status = status;
  }

  function setProgress(node, parts, total) {
    const [completed, failed, cancelled] = parts;
    const bars = node.querySelectorAll('.bar');
    bars[0].style.width = `${pct(completed, total)}%`;
    bars[1].style.width = `${pct(failed, total)}%`;
    if (bars[2]) bars[2].style.width = `${pct(cancelled || 0, total)}%`;
    node.setAttribute('aria-valuenow', String(Math.round(pct(parts.reduce((a, b) => a + (b || 0), 0), total))));
  }

  function renderBatch() {
    const b = batch;
    if (!b) return;
    show($('batch-empty'), false);
    show($('batch-view'), true);
    const sections = b.sections_requested.length;
    $('batch-title').textContent = `Vision “${b.vision_id}”`;
    $('batch-meta').textContent =
      `${sections} section${sections === 1 ? '' : 's'} × ${b.variant_ids.length} variant${b.variant_ids.length === 1 ? '' : 's'} (${b.variant_ids.map(variantName).join(', ')}) · ` +
      `voice ${voiceName(b.voice_id)} · created ${time(b.created_at)}${b.run > 1 ? ` · run ${b.run}` : ''} · batch ${b.id}`;
    setBadge($('batch-status'), b.status, BATCH_BADGE);
    const total = b.total_tracks_expected;
    setProgress($('batch-progress'), [b.tracks_completed, b.tracks_failed, b.tracks_cancelled], total);
    $('batch-counts').textContent = countsLine(b);
    const done = b.tracks_completed + b.tracks_failed + b.tracks_cancelled;
    $('batch-percent').textContent = `${done} of ${total} tracks finished · ${Math.round(pct(done, total))}%`;

    const tracks = b.tracks || [];
    const finished = BATCH_TERMINAL.includes(b.status);
    const generating = tracks.filter((t) => t.status === 'generating').length;
    const mixing = tracks.filter((t) => t.status === 'mixing').length;
    let activity = '';
    if (!finished) {
      activity = generating || mixing ? `Now: ${generating} generating voice, ${mixing} mixing` : b.status === 'pending' ? 'Waiting for a worker…' : 'Between steps…';
      if (b.cancel_requested_at) activity += ' · cancelling: running tracks finish, the rest are cancelled';
    } else if (b.completed_at) {
      const from = b.started_at || b.created_at;
      activity = `Finished at ${time(b.completed_at)}, ${seconds(new Date(b.completed_at) - new Date(from))} after it started`;
      if (Number(b.cost_usd) > 0) activity += ` · cost $${Number(b.cost_usd).toFixed(4)}`;
    }
    $('batch-activity').textContent = activity;
    $('batch-message').textContent = b.error_message || '';
    show($('batch-message'), Boolean(b.error_message));
    show($('retry-failed'), finished && b.tracks_failed > 0);
    $('retry-failed').textContent = `Retry ${b.tracks_failed} failed`;
    show($('cancel-batch'), !finished && !b.cancel_requested_at);
    renderTracks(b, tracks);
    updateRecentItem('recent-batches', b.id, b.status, BATCH_BADGE, countsLine(b));
  }

  function renderTracks(b, tracks) {
    const list = $('track-list');
    for (const variantId of b.variant_ids) {
      let group = list.querySelector(`[data-variant="${CSS.escape(variantId)}"]`);
      if (!group) {
        group = el('section', { class: 'variant-group', 'data-variant': variantId, 'data-testid': 'variant-group' },
          el('h4', {}, el('span', { class: 'variant-name', text: variantName(variantId) }), el('span', { class: 'muted small variant-count' })),
          el('ul', { class: 'track-rows' }));
        list.append(group);
      }
      const mine = tracks.filter((t) => t.variant_id === variantId);
      group.querySelector('.variant-count').textContent = ` ${mine.filter((t) => t.status === 'completed').length} of ${mine.length} completed`;
      const rows = group.querySelector('ul');
      for (const track of mine) {
        let row = trackRows.get(track.id);
        if (!row) {
          row = trackRow(track);
          trackRows.set(track.id, row);
          rows.append(row.node);
        }
        updateTrackRow(row, track);
      }
    }
  }

  function trackRow(track) {
    const r = {};
    r.status = el('span', { class: 'pill', 'data-testid': 'track-status' });
    r.duration = el('span', { class: 'muted small track-duration' });
    r.error = el('p', { class: 'track-error', 'data-testid': 'track-error', hidden: true });
    r.player = el('div', { class: 'player' });
    r.play = el('button', { type: 'button', class: 'play', 'data-testid': 'play-track', text: 'Play', hidden: true,
      onclick: () => play(r.play, r.player, r.audioUrl, 'track-audio', r.error) });
    r.node = el('li', { class: 'track', 'data-testid': 'track', 'data-track-id': track.id },
      el('span', { class: 'indicator' }, el('span', { class: 'spinner', 'aria-hidden': 'true' })),
      el('span', { class: 'track-title', text: `${track.section_index + 1}. ${track.section_title || track.section_key}` }),
      r.status, r.duration, r.play, r.error, r.player);
    return r;
  }

  function updateTrackRow(r, track) {
    r.node.className = `track status-${track.status}`;
    r.node.dataset.status = track.status;
    r.status.textContent = TRACK_LABEL[track.status] || track.status;
    r.duration.textContent = track.duration_ms ? duration(track.duration_ms) : '';
    r.audioUrl = track.audio_url;
    show(r.play, Boolean(track.audio_url));
    if (track.status === 'failed') {
      r.error.textContent = `${track.error_type ? `${track.error_type}: ` : ''}${track.error_message || 'failed'}`;
      show(r.error, true);
    } else if (track.status !== 'completed') {
      show(r.error, false);
    }
    if (track.status !== 'completed' && r.player.firstChild) r.player.replaceChildren();
  }

  async function retryFailed() {
    const id = view.batchId;
    clearError($('batch-error'));
    $('retry-failed').disabled = true;
    try {
      await api(`/v1/audio/batches/${encodeURIComponent(id)}/retry`, { method: 'POST' });
      selectBatch(id);
      refreshRecentBatches();
    } catch (error) {
      showError($('batch-error'), error);
    } finally {
      $('retry-failed').disabled = false;
    }
  }

  async function cancelBatch() {
    const id = view.batchId;
    clearError($('batch-error'));
    $('cancel-batch').disabled = true;
    try {
      const b = await api(`/v1/audio/batches/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
      if (batch && batch.id === id) {
        batch.cancel_requested_at = b.cancel_requested_at;
        renderBatch();
      }
    } catch (error) {
      showError($('batch-error'), error);
    } finally {
      $('cancel-batch').disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Recent lists

  function markRecent(listId, id) {
    for (const item of $(listId).querySelectorAll('[data-id]')) item.classList.toggle('current', item.dataset.id === id);
  }

  function updateRecentItem(listId, id, status, labels, text) {
    const item = $(listId).querySelector(`[data-id="${CSS.escape(id)}"]`);
    if (!item) return;
    setBadge(item.querySelector('.badge'), status, labels);
    item.querySelector('.recent-counts').textContent = text;
  }

  function recentItem({ id, testid, href, status, labels, title, detail, counts, createdAt, onpick }) {
    const badge = el('span', { class: 'badge' });
    setBadge(badge, status, labels);
    const item = el('li', { 'data-id': id, 'data-testid': testid, class: id === view.batchId || id === view.bookId ? 'current' : '' },
      el('a', { href, onclick: (e) => { e.preventDefault(); onpick(); } },
        el('span', { class: 'recent-head' }, el('strong', { text: title }), badge),
        el('span', { class: 'muted small', text: `${detail} · ${ago(createdAt)}` }),
        el('span', { class: 'small recent-counts', text: counts })));
    return item;
  }

  async function refreshRecentBatches() {
    const list = $('recent-batches');
    try {
      const [active, recent] = await Promise.all([api('/v1/audio/batches?status=active&limit=20'), api('/v1/audio/batches?limit=10')]);
      const seen = new Set();
      const all = [...active.batches, ...recent.batches].filter((b) => !seen.has(b.id) && seen.add(b.id));
      if (all.length === 0) return list.replaceChildren(el('li', { class: 'muted', text: 'No batches yet.' }));
      list.replaceChildren(...all.map((b) => recentItem({
        id: b.id, testid: 'recent-batch', href: `?batch=${b.id}`, status: b.status, labels: BATCH_BADGE,
        title: b.vision_id, detail: `${b.sections_requested.length} × ${b.variant_ids.length} · ${b.id.slice(0, 8)}`,
        counts: countsLine(b), createdAt: b.created_at, onpick: () => selectBatch(b.id, true),
      })));
    } catch (error) {
      list.replaceChildren(el('li', { class: 'muted', text: describe(error) }));
    }
  }

  async function refreshRecentBooks() {
    const list = $('recent-books');
    try {
      const { books } = await api('/v1/books?limit=10');
      if (books.length === 0) return list.replaceChildren(el('li', { class: 'muted', text: 'No books yet.' }));
      list.replaceChildren(...books.map((b) => recentItem({
        id: b.bookId, testid: 'recent-book', href: `?book=${b.bookId}`, status: b.status, labels: BOOK_BADGE,
        title: b.title, detail: `${b.progress.pageCount} pages`, counts: bookCountsLine(b), createdAt: b.createdAt,
        onpick: () => selectBook(b.bookId, true),
      })));
    } catch (error) {
      list.replaceChildren(el('li', { class: 'muted', text: describe(error) }));
    }
  }

  // ---------------------------------------------------------------------------------------
  // Books

  let book = null;
  let bookWatch = null;
  let scenes = null;
  let sceneRows = new Map();
  let scenesTimer = null;
  let scenesLoadedFor = -1;
  const feed = [];
  /** Spread index → status, from spread.updated events (the book's JSON has only counts). */
  const spreadStates = new Map();

  async function uploadBook(file, title) {
    const errorNode = $('book-form-error');
    clearError(errorNode);
    const form = new FormData();
    form.set('file', file, file.name);
    if (title) form.set('title', title);
    for (const b of [$('upload-book'), $('sample-book')]) b.disabled = true;
    try {
      const created = await api('/v1/books', { method: 'POST', body: form });
      $('book-file').value = '';
      $('book-title').value = '';
      selectBook(created.bookId, true);
      refreshRecentBooks();
    } catch (error) {
      showError(errorNode, error);
    } finally {
      for (const b of [$('upload-book'), $('sample-book')]) b.disabled = false;
    }
  }

  function selectBook(id, push = false) {
    if (bookWatch) bookWatch.stop();
    bookWatch = null;
    book = null;
    scenes = null;
    scenesLoadedFor = -1;
    feed.length = 0;
    spreadStates.clear();
    sceneRows = new Map();
    $('scene-timeline').replaceChildren(el('li', { class: 'muted', text: 'Scenes appear once every spread has been analysed.' }));
    $('scene-strip').replaceChildren();
    $('spread-feed').replaceChildren();
    $('spread-grid').replaceChildren();
    clearError($('book-error'));
    clearError($('page-error'));
    view.bookId = id;
    selectTab('books', push);
    show($('book-empty'), !id);
    show($('book-view'), false);
    markRecent('recent-books', id);
    if (id) startBookWatch(id);
  }

  async function startBookWatch(id) {
    const path = `/v1/books/${encodeURIComponent(id)}`;
    try {
      const data = await api(path);
      if (view.bookId !== id) return;
      applyBookSnapshot(data);
      if (BOOK_TERMINAL.includes(data.status)) {
        $('book-live').textContent = 'Finished: nothing more will change';
        $('book-live').dataset.state = 'done';
        return;
      }
    } catch (error) {
      if (view.bookId !== id) return;
      show($('book-view'), false);
      show($('book-empty'), true);
      return showError($('page-error'), error);
    }
    bookWatch = watch({
      path: `${path}/events`,
      poll: () => api(path),
      onSnapshot: applyBookSnapshot,
      onEvent: applyBookEvent,
      liveNode: $('book-live'),
      onFatal: (error) => showError($('book-error'), error),
    });
  }

  function applyBookSnapshot(data) {
    if (data.bookId !== view.bookId) return false;
    if (book && book.bookId === data.bookId && older(data, book)) return BOOK_TERMINAL.includes(book.status);
    book = data;
    renderBook();
    const terminal = BOOK_TERMINAL.includes(data.status);
    if (terminal || book.stats.scenesCreated > 0) loadScenesSoon();
    if (terminal) refreshRecentBooks();
    return terminal;
  }

  function applyBookEvent(type, d) {
    if (!book) return false;
    if (type === 'spread.updated') {
      spreadStates.set(d.spreadIndex, d);
      feed.unshift(d);
      feed.length = Math.min(feed.length, 6);
      if (d.status === 'failed' && d.error) book.errors = [...(book.errors || []), d.error];
    } else if (type === 'soundscape.updated') {
      const scene = scenes && scenes.find((s) => s.soundscape && s.soundscape.id === d.soundscapeId);
      if (scene) {
        scene.soundscape.status = d.status;
        if (d.durationMs !== undefined) scene.soundscape.durationMs = d.durationMs;
        scene.soundscape.error = d.error ? d.error.message : null;
        scene.soundscape.audioUrl = d.status === 'completed' ? `/v1/soundscapes/${d.soundscapeId}/audio` : null;
        renderScenes();
      } else loadScenesSoon();
    } else if (older(d, book)) {
      return false; // the book has moved on since (a restart)
    } else if (type.startsWith('book.')) {
      book.version = d.version;
      book.status = d.status;
      Object.assign(book.stats, {
        totalSpreads: d.totalSpreads,
        processedSpreads: d.processedSpreads,
        scenesCreated: d.scenesCreated,
        soundscapesGenerated: d.soundscapesGenerated,
        errorCount: d.errorCount,
      });
      if (d.processingTimeSeconds !== undefined && d.processingTimeSeconds !== null) book.stats.processingTimeSeconds = d.processingTimeSeconds;
      Object.assign(book.progress, { spreadsAnalysed: d.processedSpreads + d.failedSpreads, spreadsFailed: d.failedSpreads, soundscapesFailed: d.soundscapesFailed });
      if (d.scenesCreated > 0 && scenesLoadedFor !== d.scenesCreated) loadScenesSoon();
    }
    renderBook();
    const terminal = type === 'book.ready' || type === 'book.failed';
    if (terminal) {
      // The terminal event has the counters; the book's JSON adds the warning and errors.
      const id = book.bookId;
      api(`/v1/books/${encodeURIComponent(id)}`).then((data) => { if (view.bookId === id && !older(data, book)) { book = data; renderBook(); } }).catch(() => {});
      loadScenesSoon();
      refreshRecentBooks();
    }
    return terminal;
  }

  function bookCountsLine(b) {
    const s = b.stats;
    const p = b.progress;
    const parts = [`${s.processedSpreads} of ${s.totalSpreads} spreads processed`, `${p.spreadsFailed} failed`, `${s.scenesCreated} scene${s.scenesCreated === 1 ? '' : 's'}`];
    if (s.scenesCreated > 0) parts.push(`${s.soundscapesGenerated} of ${s.scenesCreated} soundscapes`);
    return parts.join(' • ');
  }

  function renderBook() {
    const b = book;
    if (!b) return;
    show($('book-empty'), false);
    show($('book-view'), true);
    const s = b.stats;
    const p = b.progress;
    $('book-title-view').textContent = b.title;
    $('book-meta').textContent = `${b.author ? `by ${b.author} · ` : ''}${p.pageCount} pages in ${s.totalSpreads} spreads · created ${time(b.createdAt)} · book ${b.bookId}`;
    setBadge($('book-status'), b.status, BOOK_BADGE);
    if (b.status === 'ready' && b.warning) $('book-status').textContent = 'Ready (with warnings)';
    setProgress($('book-progress'), [s.processedSpreads, p.spreadsFailed], s.totalSpreads);
    $('book-counts').textContent = bookCountsLine(b);
    let phase;
    if (b.status === 'ready' || b.status === 'failed') phase = s.processingTimeSeconds !== null && s.processingTimeSeconds !== undefined ? `finished in ${s.processingTimeSeconds} s` : 'finished';
    else if (p.spreadsAnalysed < s.totalSpreads) phase = `${Math.round(pct(p.spreadsAnalysed, s.totalSpreads))}% of spreads analysed`;
    else phase = 'generating soundscapes…';
    $('book-percent').textContent = phase;
    const message = b.status === 'failed' ? b.error : b.warning;
    $('book-message').textContent = message || '';
    show($('book-message'), Boolean(message));
    renderSpreads(b);
    const errors = b.errors || [];
    show($('book-errors-box'), errors.length > 0);
    $('book-errors').replaceChildren(...errors.map((e) => el('li', { text: `${e.pages ? `pages ${e.pages}` : `spread ${e.spreadIndex + 1}`}: ${e.errorType}: ${e.message}${e.attempt ? ` (attempt ${e.attempt})` : ''}` })));
    updateRecentItem('recent-books', b.bookId, b.status, BOOK_BADGE, bookCountsLine(b));
  }

  const spreadText = (f) => {
    const pages = `pages ${2 * f.spreadIndex + 1}–${2 * f.spreadIndex + 2}`;
    if (f.status === 'failed') return `Spread ${f.spreadIndex + 1} (${pages}): failed — ${f.error ? f.error.message : 'error'}`;
    const a = f.analysis;
    return `Spread ${f.spreadIndex + 1} (${pages}): ${a ? `${a.setting}, ${a.timeOfDay}, ${a.mood}${a.sceneChanged ? ' · new scene' : ''}` : f.status}`;
  };

  /** One cell per spread, filled as spreads are analysed; a finished book fills in the rest. */
  function renderSpreads(b) {
    const total = b.stats.totalSpreads;
    const failedIndexes = new Set((b.errors || []).filter((e) => e.errorType !== 'SoundscapeGenerationError').map((e) => e.spreadIndex));
    const allKnown = BOOK_TERMINAL.includes(b.status) || b.progress.spreadsAnalysed >= total;
    const grid = $('spread-grid');
    if (grid.children.length !== total) {
      grid.replaceChildren(...Array.from({ length: total }, (_, i) => el('span', { class: 'cell', 'data-index': i })));
    }
    [...grid.children].forEach((cell, i) => {
      const known = spreadStates.get(i);
      const status = known ? known.status : failedIndexes.has(i) ? 'failed' : allKnown ? 'analyzed' : 'pending';
      cell.className = `cell status-${status}`;
      cell.title = known ? spreadText(known) : `Spread ${i + 1} (pages ${2 * i + 1}–${2 * i + 2}): ${status}`;
    });
    $('spread-feed').replaceChildren(...feed.map((f) => el('li', { class: `status-${f.status}`, text: spreadText(f) })));
  }

  function loadScenesSoon() {
    clearTimeout(scenesTimer);
    const id = view.bookId;
    scenesTimer = setTimeout(async () => {
      try {
        const data = await api(`/v1/books/${encodeURIComponent(id)}/scenes`);
        if (view.bookId !== id) return;
        scenes = data.scenes;
        scenesLoadedFor = scenes.length;
        renderScenes();
      } catch (error) {
        if (view.bookId === id) showError($('book-error'), error);
      }
    }, 250);
  }

  function renderScenes() {
    if (!scenes) return;
    const list = $('scene-timeline');
    if (scenes.length === 0) {
      list.replaceChildren(el('li', { class: 'muted', text: book && BOOK_TERMINAL.includes(book.status) ? 'No scenes.' : 'Scenes appear once every spread has been analysed.' }));
      $('scene-strip').replaceChildren();
      return;
    }
    if (sceneRows.size === 0) list.replaceChildren();
    const totalPages = Math.max(1, ...scenes.map((s) => s.lastPage)) - Math.min(...scenes.map((s) => s.firstPage)) + 1;
    $('scene-strip').replaceChildren(...scenes.map((s) => {
      const status = s.soundscape ? s.soundscape.status : 'none';
      const seg = el('span', { class: `segment status-${status}`, title: `Scene ${s.index + 1}: pages ${s.firstPage}–${s.lastPage} · ${s.description}` }, el('span', { text: String(s.index + 1) }));
      seg.style.flexGrow = String(s.lastPage - s.firstPage + 1);
      seg.style.flexBasis = `${(100 * (s.lastPage - s.firstPage + 1)) / totalPages}%`;
      return seg;
    }));
    for (const scene of scenes) {
      let row = sceneRows.get(scene.id);
      if (!row) {
        row = sceneRow(scene);
        sceneRows.set(scene.id, row);
        list.append(row.node);
      }
      updateSceneRow(row, scene);
    }
  }

  function sceneRow(scene) {
    const r = {};
    r.status = el('span', { class: 'pill', 'data-testid': 'soundscape-status' });
    r.duration = el('span', { class: 'muted small' });
    r.error = el('p', { class: 'track-error', 'data-testid': 'soundscape-error', hidden: true });
    r.player = el('div', { class: 'player' });
    r.play = el('button', { type: 'button', class: 'play', 'data-testid': 'play-soundscape', text: 'Play', hidden: true,
      onclick: () => play(r.play, r.player, r.audioUrl, 'soundscape-audio', r.error) });
    r.description = el('p', { class: 'scene-description' });
    r.chips = el('p', { class: 'chips small' });
    r.node = el('li', { class: 'scene', 'data-testid': 'scene', 'data-scene-id': scene.id },
      el('div', { class: 'scene-head' },
        el('span', { class: 'indicator' }, el('span', { class: 'spinner', 'aria-hidden': 'true' })),
        el('strong', { class: 'scene-title', text: `Scene ${scene.index + 1}` }),
        el('span', { class: 'muted small', text: `pages ${scene.firstPage}–${scene.lastPage}` }),
        r.status, r.duration, r.play),
      r.description, r.chips, r.error, r.player);
    return r;
  }

  function updateSceneRow(r, scene) {
    const sound = scene.soundscape;
    const status = sound ? sound.status : 'pending';
    r.node.className = `scene status-${status}`;
    r.node.dataset.soundscapeStatus = status;
    r.status.textContent = `Soundscape: ${SOUNDSCAPE_LABEL[status] || status}`;
    r.duration.textContent = sound && sound.durationMs ? duration(sound.durationMs) : '';
    r.description.textContent = scene.description;
    r.chips.replaceChildren(el('span', { class: 'chip mood', text: scene.mood }), ...(scene.ambience || []).map((a) => el('span', { class: 'chip', text: a })));
    r.audioUrl = sound && sound.audioUrl;
    show(r.play, Boolean(r.audioUrl));
    if (sound && sound.status === 'failed') {
      r.error.textContent = sound.error || 'soundscape failed';
      show(r.error, true);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Start

  function loadEverything() {
    const tab = view.tab;
    if (!token) {
      $('recent-batches').replaceChildren(el('li', { class: 'muted', text: 'Paste a token to see your batches.' }));
      $('recent-books').replaceChildren(el('li', { class: 'muted', text: 'Paste a token to see your books.' }));
      return;
    }
    loadCatalog()
      .then(() => { if (batch) renderBatch(); })
      .catch((error) => showError($('page-error'), error));
    refreshRecentBatches();
    refreshRecentBooks();
    if (view.batchId) selectBatch(view.batchId);
    if (view.bookId) selectBook(view.bookId);
    selectTab(tab);
  }

  function fromUrl() {
    // Back and forward: show what the address names, without adding history.
    const url = readUrl();
    if (url.batchId !== view.batchId) {
      if (token) selectBatch(url.batchId);
      else view.batchId = url.batchId;
    }
    if (url.bookId !== view.bookId) {
      if (token) selectBook(url.bookId);
      else view.bookId = url.bookId;
    }
    selectTab(url.tab);
  }

  function init() {
    // A one-click link may carry the token after # (never sent to a server): keep it, then
    // take it out of the address bar and the history. A link whose token differs from the
    // one saved here replaces it only if the user says so: anyone can send a link with their
    // own token, and the token decides whose batches and books this page shows and creates.
    const hash = new URLSearchParams(location.hash.slice(1));
    const linked = hash.get('token');
    if (linked) {
      const saved = localStorage.getItem(TOKEN_KEY);
      const replace = !saved || saved === linked ||
        window.confirm('This link carries a different token from the one saved on this page. The token decides whose batches and books you see and create here. Use the token from the link?');
      if (replace) {
        token = linked;
        localStorage.setItem(TOKEN_KEY, token);
      }
      hash.delete('token');
      history.replaceState(null, '', `${location.pathname}${location.search}${[...hash].length ? `#${hash}` : ''}`);
    }
    renderToken();
    renderSectionCount();
    Object.assign(view, readUrl());

    $('token-form').addEventListener('submit', (e) => { e.preventDefault(); setToken($('token-input').value); });
    $('token-clear').addEventListener('click', () => setToken(''));
    $('tab-batches').addEventListener('click', () => selectTab('batches', true));
    $('tab-books').addEventListener('click', () => selectTab('books', true));
    $('section-count').addEventListener('change', renderSamplePreview);
    $('batch-form').addEventListener('submit', createBatchFromForm);
    $('retry-failed').addEventListener('click', retryFailed);
    $('cancel-batch').addEventListener('click', cancelBatch);
    $('recent-batches-refresh').addEventListener('click', refreshRecentBatches);
    $('recent-books-refresh').addEventListener('click', refreshRecentBooks);
    $('book-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const file = $('book-file').files[0];
      if (!file) return showError($('book-form-error'), new Error('Choose a .txt or .pdf file first.'));
      uploadBook(file, $('book-title').value.trim());
    });
    $('sample-book').addEventListener('click', () => {
      uploadBook(new File([sampleBookText()], 'sample-book.txt', { type: 'text/plain' }), $('book-title').value.trim() || 'A walk, a voyage and a city');
    });
    window.addEventListener('popstate', fromUrl);

    if (!token) {
      selectTab(view.tab);
      loadEverything();
      $('token-input').focus();
      if (view.batchId || view.bookId) showError($('page-error'), new ApiError(401, 'no_token', ''));
      return;
    }
    loadEverything();
  }

  init();
})();
