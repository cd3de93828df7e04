// Page loads of the dashboard in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core from tests/browser), for
// bench/dashboard.rs. Each load is a fresh page (tab) of one browser;
// the first of each kind warms up and is left out. Times are from the
// navigation's start (performance.timeOrigin), read in the page:
//   load_ms   the Navigation Timing entry's loadEventEnd - startTime
//   ready_ms  the overview: when its table first shows DASH_COUNT rows
//             (tr[data-instance]); the instance page: when
//             #chart-memory holds its SVG
// A MutationObserver installed before the page's own scripts notes the
// moment, so polling from here adds nothing to it.
//
// Environment (set by bench/dashboard.rs):
//   DASH_URL       http://127.0.0.1:PORT/?token=TOKEN, as `unibeam dashboard` printed it
//   DASH_COUNT     how many instances the overview must list
//   DASH_INSTANCE  the instance whose page is loaded
//   DASH_LOADS     loads of each page, the warm-up included (7)
//
// Prints one JSON object on stdout; progress goes to stderr.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CHROMIUM, launchOptions } from '../tests/browser/chromium.mjs';
import { createRequire } from 'node:module';

const READY_TIMEOUT_MS = 120000;

function fail(message) {
  console.error(`page_load.mjs: FAIL: ${message}`);
  process.exit(1);
}

function need(name) {
  const value = process.env[name];
  if (!value) fail(`${name} is not set (bench/dashboard.rs sets it)`);
  return value;
}

const URL_WITH_TOKEN = need('DASH_URL');
const COUNT = Number(need('DASH_COUNT'));
const INSTANCE = need('DASH_INSTANCE');
const LOADS = Number(process.env.DASH_LOADS || 7);

// playwright-core lives in tests/browser/node_modules, beside the browser tests.
const require = createRequire(new URL('../tests/browser/package.json', import.meta.url));
let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (e) {
  fail(`playwright-core is not installed in tests/browser/node_modules (${e.message}): run \`make tools\``);
}
if (!fs.existsSync(CHROMIUM)) fail(`${CHROMIUM} is missing: run \`make tools\` (apt-get install chromium)`);

// Runs in the page before its scripts: notes when `ready()` first holds.
function watch({ kind, count }) {
  const ready =
    kind === 'overview'
      ? () => document.querySelectorAll('tr[data-instance]').length >= count
      : () => document.querySelector('#chart-memory svg') !== null;
  const check = () => {
    if (window.__readyAt === undefined && ready()) window.__readyAt = performance.now();
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true, attributes: true });
}

async function load(context, kind, url) {
  const page = await context.newPage();
  page.setDefaultTimeout(READY_TIMEOUT_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.addInitScript(watch, { kind, count: COUNT });
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(() => window.__readyAt !== undefined, null, { timeout: READY_TIMEOUT_MS });
  const t = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    return {
      load_ms: nav.loadEventEnd - nav.startTime,
      ready_ms: window.__readyAt,
      rows: document.querySelectorAll('tr[data-instance]').length,
    };
  });
  if (kind === 'overview' && t.rows !== COUNT) throw new Error(`the overview lists ${t.rows} instances, not ${COUNT}`);
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  await page.close();
  return t;
}

const userData = fs.mkdtempSync(path.join(os.tmpdir(), 'unibeam-bench-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(userData, launchOptions({
    viewport: { width: 1440, height: 1000 },
  }));
  // The persistent context opens with a blank page; it stays, unused.
  const result = { loads: LOADS - 1, overview_load_ms: [], overview_rows_ms: [], instance_load_ms: [], instance_chart_ms: [] };
  const pages = [
    ['overview', URL_WITH_TOKEN, 'overview_load_ms', 'overview_rows_ms'],
    ['instance', `${URL_WITH_TOKEN}#/instances/${encodeURIComponent(INSTANCE)}`, 'instance_load_ms', 'instance_chart_ms'],
  ];
  for (let i = 0; i < LOADS; i++) {
    for (const [kind, url, loadKey, readyKey] of pages) {
      const t = await load(context, kind, url);
      console.error(
        `page_load.mjs: ${kind} ${i === 0 ? 'warm-up' : `${i}/${LOADS - 1}`}: load ${t.load_ms.toFixed(1)} ms, ready ${t.ready_ms.toFixed(1)} ms`,
      );
      if (i === 0) continue;
      result[loadKey].push(t.load_ms);
      result[readyKey].push(t.ready_ms);
    }
  }
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(`page_load.mjs: FAIL: ${e && e.stack ? e.stack : e}`);
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  fs.rmSync(userData, { recursive: true, force: true });
}
