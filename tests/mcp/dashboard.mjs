// Drives the dashboard (GET /) in Debian's headless Chromium with playwright-core, for
// tests/integration/test_dashboard.py. One scenario per run; each prints one JSON line
// last ({"ok": true, ...}) or FAIL: on stderr and exits 1. Screenshots go to ARTEFACTS.
//
//   node dashboard.mjs flow URL ARTEFACTS CPU GPU_A GPU_B LOGSVC
//   node dashboard.mjs keys URL ARTEFACTS SERVICE OPERATOR_KEY VIEWER_KEY
//   node dashboard.mjs reconnect URL ARTEFACTS SERVICE   (prints READY when the page is
//     live; the test then restarts the daemon on the same port and starts SERVICE)
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import path from 'node:path';

const CHROMIUM = process.env.NANNY_CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 60000; // for any one thing to show (the ASan daemon included)

const [scenario, url, artefacts, ...rest] = process.argv.slice(2);
const origin = new URL(url).origin;
const requests = []; // every URL any page asked for
const consoleErrors = [];

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function card(name) {
  return `li.card[data-service="${name}"]`;
}

// Opens the dashboard in a new context of the given viewport; records its requests.
async function openPage(browser, viewport, mobile = false) {
  const context = await browser.newContext({ viewport, isMobile: mobile, hasTouch: mobile,
    deviceScaleFactor: mobile ? 2 : 1 });
  const page = await context.newPage();
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.evaluate(() => { window.nannyNoReload = true; });
  return { context, page };
}

async function waitState(page, name, state) {
  try {
    await page.waitForFunction(([sel, want]) => {
      const el = document.querySelector(`${sel} .state`);
      return el && el.textContent === want;
    }, [card(name), state], { timeout: WAIT_MS });
  } catch (e) {
    const now = await page.locator(`${card(name)} .state`).textContent().catch(() => '(no card)');
    fail(`${name} did not show "${state}" on the page (it shows "${now}")`);
  }
}

// Waits until the element's text passes check, data since the page's CSP allows no
// eval: {equals}, {includes}, {prefix}, {regex}, or {atLeast: N} (its highest numbered
// testsvc line).
async function waitText(page, selector, check, what) {
  try {
    await page.waitForFunction(([sel, c]) => {
      const el = document.querySelector(sel);
      if (!el || el.closest('[hidden]')) return false;
      const t = el.textContent;
      if ('equals' in c) return t === c.equals;
      if ('includes' in c) return t.includes(c.includes);
      if ('prefix' in c) return t.startsWith(c.prefix);
      if ('regex' in c) return new RegExp(c.regex).test(t);
      const ks = [...t.matchAll(/testsvc: (?:line|err) (\d+)/g)].map((m) => Number(m[1]));
      return ks.length > 0 && Math.max(...ks) >= c.atLeast;
    }, [selector, check], { timeout: WAIT_MS });
  } catch (e) {
    const now = await page.locator(selector).textContent().catch(() => '(none)');
    fail(`${what}: ${selector} shows ${JSON.stringify(now)} (${e.message.split('\n')[0]})`);
  }
  return page.locator(selector).textContent();
}

async function shot(page, name, fullPage = false) {
  const file = path.join(artefacts, name);
  await page.screenshot({ path: file, fullPage });
  return file;
}

// A request from another client, curl, as a person would make it; {status, body}.
function curl(method, pathname) {
  const out = execFileSync('curl', ['-sS', '--max-time', '60', '-X', method, '-w', '\n%{http_code}',
    origin + pathname], { encoding: 'utf8' });
  const cut = out.lastIndexOf('\n');
  return { status: Number(out.slice(cut + 1)), body: out.slice(0, cut) };
}

// Numbered lines (testsvc: line K / err K) in the log panel: the highest K.
function lastNumber(text) {
  const ks = [...text.matchAll(/testsvc: (?:line|err) (\d+)/g)].map((m) => Number(m[1]));
  return ks.length ? Math.max(...ks) : 0;
}

async function flow(browser, [cpu, gpuA, gpuB, logsvc]) {
  const out = { screenshots: [] };
  const { page } = await openPage(browser, { width: 1280, height: 900 });
  for (const name of [cpu, gpuA, gpuB, logsvc]) await waitState(page, name, 'stopped');
  out.listed = await page.locator('li.card').evaluateAll((els) => els.map((e) => e.dataset.service));
  await waitText(page, '#live', { equals: 'live' }, 'the event stream is not live');

  // A click starts a service; the state word turns running without a reload.
  await page.click(`${card(cpu)} button.start`);
  await waitState(page, cpu, 'running');
  out.cpuHealth = await waitText(page, `${card(cpu)} .health`, { prefix: 'healthy' }, 'cpu health');

  // Two GPU services: the second's start is a 409 naming the holder; force works.
  await page.click(`${card(gpuA)} button.start`);
  await waitState(page, gpuA, 'running');
  await waitText(page, '#gpu-holder', { equals: gpuA }, 'the GPU panel');
  await page.click(`${card(gpuB)} button.start`);
  out.conflict = await waitText(page, `${card(gpuB)} .message-text`, { includes: gpuA },
    'the 409 is not explained with the holder');
  out.forceVisible = await page.locator(`${card(gpuB)} button.force`).isVisible();
  out.screenshots.push(await shot(page, 'desktop-409.png'));
  await page.click(`${card(gpuB)} button.force`);
  await waitState(page, gpuB, 'running');
  await waitState(page, gpuA, 'stopped');
  out.afterForce = await page.locator(`${card(gpuB)} .message-text`).textContent();
  await waitText(page, '#gpu-holder', { equals: gpuB }, 'the GPU panel after force');

  // A change made by another client (curl) shows up live.
  const stopped = curl('POST', `/services/${cpu}/stop`);
  if (stopped.status !== 200) fail(`POST stop ${cpu}: ${stopped.status} ${stopped.body}`);
  await waitState(page, cpu, 'stopped');
  const started = curl('POST', `/services/${cpu}/start`);
  if (started.status !== 200) fail(`POST start ${cpu}: ${started.status} ${started.body}`);
  await waitState(page, cpu, 'running');

  // The log panel follows: new lines appear after the first ones.
  await page.click(`${card(logsvc)} button.start`);
  await waitState(page, logsvc, 'running');
  await page.click(`${card(logsvc)} button.show-logs`);
  const first = lastNumber(await waitText(page, '#logs-text', { regex: 'testsvc: line \\d+' }, 'no log lines'));
  const later = lastNumber(await waitText(page, '#logs-text',
    { atLeast: first + 3 }, 'the log panel does not follow'));
  out.logs = { first, later, status: await page.locator('#logs-status').textContent() };
  out.screenshots.push(await shot(page, 'desktop-logs.png'));
  out.noReload = await page.evaluate(() => window.nannyNoReload === true);
  out.navigations = await page.evaluate(() => performance.getEntriesByType('navigation').length);

  // A phone: every card visible, its buttons inside the screen and usable.
  const phone = await openPage(browser, { width: 390, height: 844 }, true);
  for (const name of [cpu, gpuA, gpuB, logsvc]) await phone.page.locator(card(name)).waitFor({ timeout: WAIT_MS });
  await waitState(phone.page, gpuB, 'running');
  out.phone = await phone.page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const boxes = [...document.querySelectorAll('li.card, li.card button:not([hidden])')]
      .filter((e) => !e.closest('[hidden]'))
      .map((e) => e.getBoundingClientRect());
    return {
      width,
      scrollWidth: document.documentElement.scrollWidth,
      inside: boxes.every((b) => b.left >= 0 && b.right <= width + 0.5),
      smallest: Math.min(...boxes.map((b) => b.height)),
    };
  });
  out.screenshots.push(await shot(phone.page, 'phone.png'));
  out.screenshots.push(await shot(phone.page, 'phone-full.png', true));
  await phone.page.locator(`${card(gpuB)} button.stop`).tap();
  await waitState(phone.page, gpuB, 'stopped');
  await waitState(page, gpuB, 'stopped');
  out.screenshots.push(await shot(page, 'desktop.png'));
  return out;
}

async function keys(browser, [service, operatorKey, viewerKey]) {
  const out = { screenshots: [] };
  // The page itself loads without a key, then asks for one.
  const op = await openPage(browser, { width: 1100, height: 800 });
  await op.page.locator('#key-dialog[open]').waitFor({ timeout: WAIT_MS });
  out.screenshots.push(await shot(op.page, 'keys-dialog.png'));
  // A wrong key is refused and asked again; the right one works.
  await op.page.fill('#key-input', 'nanny_wrong');
  await op.page.click('#key-form button[type=submit]');
  out.askedAgain = await waitText(op.page, '#key-why', { includes: 'refused' }, 'a wrong key was not refused');
  await op.page.fill('#key-input', operatorKey);
  await op.page.click('#key-form button[type=submit]');
  await waitState(op.page, service, 'stopped');
  out.stored = await op.page.evaluate(() => sessionStorage.getItem('nanny-key') !== null);
  await op.page.click(`${card(service)} button.start`);
  await waitState(op.page, service, 'running');
  await op.page.click(`${card(service)} button.stop`);
  await waitState(op.page, service, 'stopped');
  out.operatorDialogs = await op.page.locator('#key-dialog[open]').count();

  // A viewer sees everything and is refused a start, in words.
  const viewer = await openPage(browser, { width: 1100, height: 800 });
  await viewer.page.locator('#key-dialog[open]').waitFor({ timeout: WAIT_MS });
  await viewer.page.fill('#key-input', viewerKey);
  await viewer.page.click('#key-form button[type=submit]');
  await waitState(viewer.page, service, 'stopped');
  await viewer.page.click(`${card(service)} button.start`);
  out.refused = await waitText(viewer.page, `${card(service)} .message-text`, { prefix: 'Refused' },
    'the viewer was not told of the refusal');
  out.screenshots.push(await shot(viewer.page, 'viewer-refused.png'));
  // The operator's page saw nothing start.
  out.operatorState = await op.page.locator(`${card(service)} .state`).textContent();
  return out;
}

async function reconnect(browser, [service]) {
  const out = { screenshots: [] };
  const { page } = await openPage(browser, { width: 1100, height: 800 });
  await waitState(page, service, 'stopped');
  await waitText(page, '#live', { equals: 'live' }, 'the event stream is not live');
  const before = requests.filter((u) => u.endsWith('/services')).length;
  console.log('READY');
  // The daemon goes: the page says so, then comes back by itself to the new one.
  await page.waitForFunction(() => document.getElementById('live').dataset.live === 'down', null,
    { timeout: WAIT_MS });
  out.down = await page.locator('#live').textContent();
  out.screenshots.push(await shot(page, 'reconnecting.png'));
  await waitText(page, '#live', { equals: 'live' }, 'the page did not reconnect');
  await waitState(page, service, 'running');
  out.rereads = requests.filter((u) => u.endsWith('/services')).length - before;
  out.eventRequests = requests.filter((u) => u.endsWith('/events')).length;
  out.noReload = await page.evaluate(() => window.nannyNoReload === true);
  return out;
}

const browser = await chromium.launch({ executablePath: CHROMIUM });
let out;
try {
  if (scenario === 'flow') out = await flow(browser, rest);
  else if (scenario === 'keys') out = await keys(browser, rest);
  else if (scenario === 'reconnect') out = await reconnect(browser, rest);
  else fail(`unknown scenario ${scenario}`);
} catch (e) {
  fail(e.stack || String(e));
} finally {
  await browser.close();
}
out.requests = requests;
out.outside = requests.filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith('data:'));
out.consoleErrors = consoleErrors;
out.ok = true;
console.log(JSON.stringify(out));
