// The dashboard's lag, for bench/dashboard.sh: how long from a state change in the
// daemon (its event's `time`, stamped when the hub publishes it) to the page showing the
// new state word (a MutationObserver in the page, on the same machine's clock), over
// CYCLES start/stop cycles of one process service started by another client (fetch).
// Prints one JSON line: {"samples": [ms...], "median", "p99"}.
//
//   node bench/dashboard.mjs URL SERVICE CYCLES
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'tests', 'mcp', 'package.json'));
const { chromium } = require('playwright-core');

const [url, service, cyclesArg] = process.argv.slice(2);
const cycles = Number(cyclesArg || 20);
const WAIT_MS = 30000;

const browser = await chromium.launch({ executablePath: process.env.NANNY_CHROMIUM || '/usr/bin/chromium' });
try {
  const page = await browser.newPage();
  await page.goto(url);
  const sel = `li.card[data-service="${service}"]`;
  await page.waitForFunction((s) => document.querySelector(`${s} .state`)?.textContent === 'stopped'
    && document.getElementById('live').dataset.live === 'live', sel, { timeout: WAIT_MS });
  // Each new state word with the time it showed and its event's time.
  await page.evaluate((s) => {
    const card = document.querySelector(s);
    window.seen = [];
    let last = card.querySelector('.state').textContent;
    new MutationObserver(() => {
      const word = card.querySelector('.state').textContent;
      if (word === last) return;
      last = word;
      window.seen.push({ word, shown: Date.now(), event: Date.parse(card.dataset.eventTime) });
    }).observe(card, { subtree: true, childList: true, characterData: true });
  }, sel);
  const post = async (action) => {
    const r = await fetch(new URL(`/services/${service}/${action}`, url), { method: 'POST' });
    if (!r.ok) throw new Error(`${action}: ${r.status} ${await r.text()}`);
  };
  const shows = (word) => page.waitForFunction((w) => window.seen.length && window.seen.at(-1).word === w,
    word, { timeout: WAIT_MS });
  for (let i = 0; i < cycles; i++) {
    await post('start');
    await shows('running');
    await post('stop');
    await shows('stopped');
  }
  const seen = await page.evaluate(() => window.seen);
  const samples = seen.map((s) => s.shown - s.event).sort((a, b) => a - b);
  const at = (q) => samples[Math.min(samples.length - 1, Math.ceil(q * samples.length) - 1)];
  console.log(JSON.stringify({ words: seen.length, samples, median: at(0.5), p99: at(0.99) }));
} finally {
  await browser.close();
}
