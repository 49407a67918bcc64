// The dashboard of Service Nanny: the services from GET /services, kept live by
// GET /events read as a fetch() stream (EventSource cannot send a key), start and stop
// through the API, a followed log, the GPU. No framework, no build step, no polling.
'use strict';

const KEY_STORAGE = 'nanny-key';
const LOG_TAIL = 200;        // lines a followed log starts with
const LOG_LINES_MAX = 2000;  // lines the log panel keeps
const RECONNECT_MS = [500, 1000, 2000, 5000, 10000];
const HOLDING = ['starting', 'running', 'unhealthy', 'stopping'];

const $ = (id) => document.getElementById(id);
const cards = new Map();     // service name -> {el, status}
let gpuQueue = [];
let lastEventId = null;
let keyPrompt = null;        // the pending key dialog, shared by every call that needs it

// --- the key ---------------------------------------------------------------------

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

// Asks for a key (once for every caller waiting on it); why says what went wrong.
function askKey(why) {
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve) => {
    const dialog = $('key-dialog'), form = $('key-form'), input = $('key-input');
    $('key-why').textContent = why;
    input.value = '';
    form.onsubmit = (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORAGE, key);
      $('forget-key').hidden = false;
      dialog.close();
      keyPrompt = null;
      resolve(key);
    };
    dialog.oncancel = (e) => e.preventDefault(); // the page cannot work without it
    dialog.showModal();
    input.focus();
  });
  return keyPrompt;
}

// fetch() with the key; a 401 asks for a key and tries again with it.
async function api(path, options = {}) {
  for (;;) {
    const headers = Object.assign({}, options.headers);
    const key = storedKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    const resp = await fetch(path, Object.assign({}, options, { headers, cache: 'no-store' }));
    if (resp.status !== 401) return resp;
    const body = await errorOf(resp);
    sessionStorage.removeItem(KEY_STORAGE);
    await askKey(key ? `The key was refused (${body.message}). Enter another one.`
      : 'This daemon needs an API key: enter yours. It is kept in this tab only.');
  }
}

// The daemon's error document of a failed answer, or one made from its status.
async function errorOf(resp) {
  const text = await resp.text().catch(() => '');
  try {
    const doc = JSON.parse(text);
    if (doc && typeof doc.message === 'string') return doc;
  } catch (e) { /* not JSON: said below */ }
  return { error: `http_${resp.status}`, message: `${resp.status} ${resp.statusText} ${text.slice(0, 200)}`.trim() };
}

// --- notices ---------------------------------------------------------------------

function notice(text) {
  $('notice-text').textContent = text;
  $('notice').hidden = false;
}

function setLive(state, text) {
  const live = $('live');
  live.dataset.live = state;
  live.textContent = text;
}

// --- the services ----------------------------------------------------------------

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor(s / 60) % 60}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
}

function healthText(st) {
  const h = st.health || {};
  if (st.is_healthy) return h.latency_ms != null ? `healthy (${h.latency_ms} ms)` : 'healthy';
  if (st.state === 'stopped' || st.state === 'failed') return '—';
  if (h.ok === false) return `failing: ${h.error || `HTTP ${h.status_code}`}`;
  if (h.ok == null) return st.state === 'running' ? 'no check' : 'not checked yet';
  return 'waiting';
}

function gpuText(st) {
  if (!st.gpu_required) return 'not needed';
  return HOLDING.includes(st.state) ? 'holds the GPU' : 'needs the GPU';
}

function uptimeText(st) {
  if (!st.started_at || !HOLDING.includes(st.state) || st.state === 'stopping') return '—';
  return duration(Date.now() - Date.parse(st.started_at));
}

function newCard(name) {
  const el = $('card-template').content.firstElementChild.cloneNode(true);
  el.dataset.service = name;
  el.querySelector('.name').textContent = name;
  el.querySelector('.start').onclick = () => start(name, false);
  el.querySelector('.stop').onclick = () => stop(name);
  el.querySelector('.force').onclick = () => start(name, true);
  el.querySelector('.show-logs').onclick = () => followLogs(name);
  el.querySelector('.dismiss').onclick = () => hideMessage(name);
  return el;
}

// Shows a service's status on its card (made when new).
function render(st) {
  let card = cards.get(st.name);
  if (!card) {
    card = { el: newCard(st.name), events: 0 };
    cards.set(st.name, card);
  }
  card.status = st;
  const el = card.el;
  el.dataset.state = st.state;
  el.querySelector('.state').textContent = st.state;
  el.querySelector('.desc').textContent = st.description || '';
  el.querySelector('.desc').hidden = !st.description;
  el.querySelector('.health').textContent = healthText(st);
  el.querySelector('.gpu').textContent = gpuText(st);
  el.querySelector('.port').textContent = st.port != null ? String(st.port) : '—';
  el.querySelector('.uptime').textContent = uptimeText(st);
  const err = el.querySelector('.last-error');
  err.textContent = st.last_error ? `Last error: ${st.last_error}` : '';
  err.hidden = !st.last_error;
  el.querySelector('.start').disabled = st.state !== 'stopped' && st.state !== 'failed';
  el.querySelector('.stop').disabled = st.state === 'stopped';
}

function showMessage(name, text, kind, force) {
  const card = cards.get(name);
  if (!card) { notice(text); return; }
  const box = card.el.querySelector('.message');
  box.dataset.kind = kind;
  box.querySelector('.message-text').textContent = text;
  box.querySelector('.force').hidden = !force;
  box.hidden = false;
}

function hideMessage(name) {
  const card = cards.get(name);
  if (card) card.el.querySelector('.message').hidden = true;
}

// Puts the list in order on the page: every card, the counts, the GPU panel.
function renderAll(doc) {
  const seen = new Set();
  const list = $('services');
  for (const st of doc.services) {
    seen.add(st.name);
    render(st);
    list.appendChild(cards.get(st.name).el);
  }
  for (const [name, card] of cards) {
    if (!seen.has(name)) { card.el.remove(); cards.delete(name); }
  }
  $('count').textContent = `(${doc.services.length})`;
  $('empty').hidden = doc.services.length > 0;
  const errs = $('manifest-errors');
  errs.replaceChildren();
  for (const e of doc.errors || []) {
    const li = document.createElement('li');
    li.textContent = `${e.path || e.folder || ''}${e.line ? `:${e.line}` : ''}: ${e.message}`;
    errs.appendChild(li);
  }
  errs.hidden = !(doc.errors || []).length;
  renderGpu(null);
  renderLogChoices();
}

// The GPU panel: holders from a gpu event, else from the services' states.
function renderGpu(event) {
  let holders;
  if (event) {
    holders = event.holders || [];
    gpuQueue = event.queue || [];
  } else {
    holders = [...cards.values()].filter((c) => c.status.gpu_required && HOLDING.includes(c.status.state))
      .map((c) => c.status.name);
  }
  $('gpu-holder').textContent = holders.length ? holders.join(', ') : 'none: the GPU is free';
  // The queue comes with the holder's changes only: who holds since then waits no more.
  const waiting = gpuQueue.filter((name) => !holders.includes(name) &&
    !(cards.has(name) && HOLDING.includes(cards.get(name).status.state)));
  $('gpu-queue').textContent = waiting.length ? waiting.join(', ') : 'empty';
}

async function loadServices() {
  const resp = await api('/services');
  if (!resp.ok) {
    const e = await errorOf(resp);
    notice(`Could not read the services: ${e.message}`);
    return;
  }
  renderAll(await resp.json());
}

// Reads one service's status again (after an event about it).
async function loadStatus(name) {
  const asked = cards.has(name) ? cards.get(name).events : 0;
  const resp = await api(`/services/${encodeURIComponent(name)}/status`);
  if (resp.ok) {
    const st = await resp.json();
    const card = cards.get(name);
    // A state event that came after the question is newer than the answer: it stays.
    if (card && card.events !== asked) st.state = card.status.state;
    render(st);
    renderGpu(null);
  } else if (resp.status !== 404) {
    notice(`Could not read ${name}: ${(await errorOf(resp)).message}`);
  }
}

// --- start and stop --------------------------------------------------------------

async function start(name, force) {
  hideMessage(name);
  let resp;
  try {
    resp = await api(`/services/${encodeURIComponent(name)}/start`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(force ? { force: true } : {}),
    });
  } catch (e) {
    showMessage(name, `Start failed: the daemon did not answer (${e.message}).`, 'error', false);
    return;
  }
  if (resp.ok) {
    const doc = await resp.json();
    if (doc.preempted && doc.preempted.length) {
      showMessage(name, `Started after stopping ${doc.preempted.join(', ')}, which held the GPU.`, 'info', false);
    }
    return;
  }
  const e = await errorOf(resp);
  if (resp.status === 409 && e.error === 'gpu_conflict') {
    const holder = e.holder || (e.holders || []).join(', ') || 'another service';
    showMessage(name, `Not started: ${holder} is using the GPU. Force start stops ${holder}, then starts ${name}.`,
      'conflict', true);
  } else if (resp.status === 403) {
    showMessage(name, `Refused: ${e.message}`, 'error', false);
  } else {
    showMessage(name, `Start failed (${resp.status}): ${e.message}`, 'error', false);
  }
}

async function stop(name) {
  hideMessage(name);
  let resp;
  try {
    resp = await api(`/services/${encodeURIComponent(name)}/stop`, { method: 'POST' });
  } catch (e) {
    showMessage(name, `Stop failed: the daemon did not answer (${e.message}).`, 'error', false);
    return;
  }
  if (!resp.ok) {
    const e = await errorOf(resp);
    showMessage(name, resp.status === 403 ? `Refused: ${e.message}` : `Stop failed (${resp.status}): ${e.message}`,
      'error', false);
  }
}

// --- streams ---------------------------------------------------------------------

// Calls onChunk with each piece of text of a streamed answer until it ends.
async function readText(resp, onChunk) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    onChunk(decoder.decode(value, { stream: true }));
  }
  onChunk(decoder.decode());
}

// One server-sent event's fields from its block of lines.
function sseFields(block) {
  const ev = { event: 'message', data: [], id: null };
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'data') ev.data.push(value);
    else if (field === 'event') ev.event = value;
    else if (field === 'id') ev.id = value;
  }
  return ev;
}

function onEvent(type, data) {
  if (type === 'state') {
    const card = cards.get(data.service);
    if (!card) { loadServices(); return; }
    card.el.dataset.eventTime = data.time;
    card.events = (card.events || 0) + 1;
    render(Object.assign({}, card.status, { state: data.to }));
    renderGpu(null);
    loadStatus(data.service);
  } else if (type === 'health') {
    if (cards.has(data.service)) loadStatus(data.service);
  } else if (type === 'gpu') {
    renderGpu(data);
  } else if (type === 'discovery' || type === 'reset') {
    loadServices();
  }
}

// Follows GET /events for ever: each reconnection resumes with Last-Event-ID and
// reads /services again (what was missed, and a reset, are then on the page).
async function followEvents() {
  for (let attempt = 0; ; attempt++) {
    try {
      const headers = { Accept: 'text/event-stream' };
      if (lastEventId) headers['Last-Event-ID'] = lastEventId;
      const resp = await api('/events', { headers });
      if (!resp.ok) throw new Error((await errorOf(resp)).message);
      setLive('live', 'live');
      attempt = 0;
      await loadServices();
      let buf = '';
      await readText(resp, (text) => {
        buf += text.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const ev = sseFields(buf.slice(0, end));
          buf = buf.slice(end + 2);
          if (ev.id) lastEventId = ev.id;
          if (!ev.data.length) continue;
          try {
            onEvent(ev.event, JSON.parse(ev.data.join('\n')));
          } catch (e) {
            notice(`A bad event from the daemon: ${e.message}`);
          }
        }
      });
      setLive('down', 'reconnecting: the event stream ended');
    } catch (e) {
      setLive('down', `reconnecting: ${e.message}`);
    }
    await new Promise((r) => setTimeout(r, RECONNECT_MS[Math.min(attempt, RECONNECT_MS.length - 1)]));
  }
}

// --- the log panel ---------------------------------------------------------------

let logFollow = null; // {name, controller}

function renderLogChoices() {
  const select = $('logs-service');
  const want = logFollow ? logFollow.name : select.value;
  const names = [...cards.keys()];
  select.replaceChildren(new Option('choose a service', ''), ...names.map((n) => new Option(n, n)));
  select.value = names.includes(want) ? want : '';
}

function appendLog(text) {
  const pre = $('logs-text');
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
  pre.append(text);
  if (pre.childNodes.length > 512) pre.normalize();
  const lines = pre.textContent.split('\n');
  if (lines.length > LOG_LINES_MAX) pre.textContent = lines.slice(-LOG_LINES_MAX).join('\n');
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

async function followLogs(name) {
  if (logFollow) logFollow.controller.abort();
  $('logs-text').textContent = '';
  $('logs-service').value = name;
  if (!name) {
    logFollow = null;
    $('logs-status').textContent = 'Choose a service to follow its log.';
    return;
  }
  const me = { name, controller: new AbortController() };
  logFollow = me;
  $('logs-title').textContent = `Logs: ${name}`;
  $('logs-status').textContent = `Following ${name}…`;
  if (window.matchMedia('(max-width: 900px)').matches) $('logs').scrollIntoView({ behavior: 'smooth' });
  try {
    const resp = await api(`/services/${encodeURIComponent(name)}/logs?follow=1&tail=${LOG_TAIL}`,
      { signal: me.controller.signal });
    if (!resp.ok) {
      $('logs-status').textContent = `Cannot follow ${name}: ${(await errorOf(resp)).message}`;
      return;
    }
    $('logs-status').textContent = `Following ${name} (last ${LOG_TAIL} lines, then new ones as they come).`;
    await readText(resp, appendLog);
    if (logFollow === me) $('logs-status').textContent = `The log of ${name} is no longer followed: the daemon ended the stream.`;
  } catch (e) {
    if (logFollow === me && e.name !== 'AbortError') {
      $('logs-status').textContent = `The log of ${name} stopped: ${e.message}`;
    }
  }
}

// --- start -----------------------------------------------------------------------

function tickUptimes() {
  for (const card of cards.values()) card.el.querySelector('.uptime').textContent = uptimeText(card.status);
}

document.addEventListener('DOMContentLoaded', () => {
  $('notice-close').onclick = () => { $('notice').hidden = true; };
  $('forget-key').hidden = !storedKey();
  $('forget-key').onclick = () => { sessionStorage.removeItem(KEY_STORAGE); location.reload(); };
  $('logs-service').onchange = (e) => followLogs(e.target.value);
  $('logs-clear').onclick = () => { $('logs-text').textContent = ''; };
  setInterval(tickUptimes, 1000); // the page's own clock: asks the daemon nothing
  window.addEventListener('unhandledrejection', (e) => notice(`Error: ${e.reason && e.reason.message || e.reason}`));
  followEvents();
});
