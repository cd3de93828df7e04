// The dashboard in a real browser (Debian's headless Chromium, driven by
// playwright-core), against a real `unibeam dashboard` and real VMs that
// tests/dashboard_browser.rs started. Exits 0 when every step holds, 1 with
// the failing step's message otherwise; screenshots of each step go to
// DASH_OUT.
//
// Environment (all set by tests/dashboard_browser.rs):
//   DASH_URL          http://127.0.0.1:PORT/?token=TOKEN, as `unibeam dashboard` printed it
//   DASH_INSTANCES    two running hello instances, comma-separated; the first is charted,
//                     stopped and restarted, the second killed
//   DASH_CLUSTER      a running cluster of three
//   DASH_MEMBERS      its members' instance names, comma-separated
//   DASH_OUT          where screenshots go
//   DASH_STOP_SECS    how long Stop may take to show "exited"
//   DASH_MESH_SECS    how long a node's loss, and its return, may take to show

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CHROMIUM, launchOptions } from './chromium.mjs';


function need(name) {
  const value = process.env[name];
  if (!value) fail(`${name} is not set (tests/dashboard_browser.rs sets it)`);
  return value;
}

function fail(message) {
  console.error(`dashboard.mjs: FAIL: ${message}`);
  process.exit(1);
}

const URL_WITH_TOKEN = need('DASH_URL');
const INSTANCES = need('DASH_INSTANCES').split(',');
const CLUSTER = need('DASH_CLUSTER');
const MEMBERS = need('DASH_MEMBERS').split(',');
const OUT = need('DASH_OUT');
const STOP_MS = Number(process.env.DASH_STOP_SECS || 120) * 1000;
const MESH_MS = Number(process.env.DASH_MESH_SECS || 240) * 1000;

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  fail(`playwright-core is not installed in tests/browser/node_modules (${e.message}): run \`make tools\``);
}
if (!fs.existsSync(CHROMIUM)) fail(`${CHROMIUM} is missing: run \`make tools\` (apt-get install chromium)`);

const origin = new URL(URL_WITH_TOKEN).origin;
const token = new URL(URL_WITH_TOKEN).searchParams.get('token');
if (!token) fail(`DASH_URL has no ?token=: ${URL_WITH_TOKEN}`);
fs.mkdirSync(OUT, { recursive: true });

const started = Date.now();
const timings = {};
const secs = (ms) => Math.round(ms / 100) / 10;
function log(message) {
  console.error(`dashboard.mjs [${secs(Date.now() - started).toFixed(1)} s] ${message}`);
}

// Runs one step; a failure names the step.
let stepName = '';
async function step(name, body) {
  stepName = name;
  const t0 = Date.now();
  log(`step: ${name}`);
  await body();
  timings[name] = secs(Date.now() - t0);
  log(`ok: ${name} (${timings[name]} s)`);
}

const userData = fs.mkdtempSync(path.join(os.tmpdir(), 'unibeam-dashboard-chromium-'));
let context;
const pageErrors = [];
const foreign = [];
const unauthenticated = [];

async function shot(page, file, fullPage = true) {
  await page.screenshot({ path: path.join(OUT, file), fullPage });
  log(`screenshot ${path.join(OUT, file)}`);
}

// The API as the page sees it, from here (for the QEMU pid to kill).
async function api(p) {
  const res = await fetch(origin + p, { headers: { Authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`GET ${p}: ${res.status} ${await res.text()}`);
  return res.json();
}

const attr = (page, selector, name) => page.locator(selector).first().getAttribute(name, { timeout: 1000 }).catch(() => null);

async function main() {
  context = await chromium.launchPersistentContext(userData, launchOptions({
    viewport: { width: 1440, height: 1000 },
  }));
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => pageErrors.push(String(e && e.stack ? e.stack : e)));
  page.on('dialog', (d) => {
    log(`dialog (${d.type()}): ${d.message()} -> accept`);
    d.accept();
  });
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) log(`console error: ${m.text()}`);
  });
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.protocol === 'data:' || u.protocol === 'about:') return;
    if (u.origin !== origin) {
      foreign.push(r.url());
      return;
    }
    // Every request carries the token: the header, or (EventSource, the page itself) the query.
    const header = r.headers().authorization;
    if (header !== `Bearer ${token}` && u.searchParams.get('token') !== token) unauthenticated.push(`${r.method()} ${r.url()}`);
  });

  await step('overview lists the instances, the cluster members and the cluster', async () => {
    await page.goto(URL_WITH_TOKEN, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#overview');
    for (const name of [...INSTANCES, ...MEMBERS]) {
      await page.waitForSelector(`tr[data-instance="${name}"][data-state="running"]`, { timeout: 120000 });
    }
    const row = page.locator(`tr[data-cluster="${CLUSTER}"]`);
    await row.waitFor();
    await page.waitForSelector(`tr[data-cluster="${CLUSTER}"][data-members="${MEMBERS.length}"][data-running="${MEMBERS.length}"]`, { timeout: 120000 });
    for (const member of MEMBERS) {
      const cell = await page.locator(`tr[data-instance="${member}"] td.cluster`).textContent();
      if (cell.trim() !== CLUSTER) throw new Error(`${member}'s cluster cell says ${JSON.stringify(cell)}`);
    }
    const memory = await page.locator(`tr[data-instance="${INSTANCES[0]}"] td.memory`).textContent();
    log(`${INSTANCES[0]} memory cell: ${memory}`);
    // The token stays in the page's variable and URL: no cookie, no storage.
    const stored = await page.evaluate(() => ({ cookie: document.cookie, local: localStorage.length, href: location.href }));
    if (stored.cookie !== '' || stored.local !== 0) throw new Error(`the page stored something: ${JSON.stringify(stored)}`);
    if (!stored.href.includes(`token=${token}`)) throw new Error(`the URL lost its token: ${stored.href}`);
    await shot(page, '01-overview.png');
  });

  const charted = INSTANCES[0];
  await step(`instance page of ${charted}: charts grow without a reload`, async () => {
    await page.click(`tr[data-instance="${charted}"] td.name a`);
    await page.waitForSelector(`#instance[data-name="${charted}"]`);
    await page.evaluate(() => {
      window.__noReload = true;
    });
    await page.waitForSelector('#state[data-state="running"]');
    await page.waitForFunction(() => Number(document.querySelector('#chart-memory svg')?.getAttribute('data-points')) >= 3, null, { timeout: 180000 });
    const first = Number(await attr(page, '#chart-memory svg', 'data-points'));
    const firstCircles = await page.locator('#chart-memory svg circle').count();
    log(`memory chart: ${first} points, ${firstCircles} circles`);
    if (firstCircles < first) throw new Error(`${first} points but ${firstCircles} circles`);
    await page.waitForFunction((n) => Number(document.querySelector('#chart-memory svg')?.getAttribute('data-points')) > n, first, { timeout: 90000 });
    const later = Number(await attr(page, '#chart-memory svg', 'data-points'));
    const laterCircles = await page.locator('#chart-memory svg circle').count();
    log(`memory chart: ${later} points, ${laterCircles} circles`);
    if (laterCircles <= firstCircles) throw new Error(`circles did not grow: ${firstCircles} -> ${laterCircles}`);
    if (!(await page.evaluate(() => window.__noReload === true))) throw new Error('the page reloaded');
    for (const id of ['#chart-processes', '#chart-run-queue', '#chart-cpu']) {
      await page.waitForSelector(`${id} svg[data-points]`);
    }
    await page.waitForFunction(() => Number(document.querySelector('#pie-memory svg')?.getAttribute('data-slices')) >= 1);
    await page.waitForFunction(() => document.querySelectorAll('#timeline tbody tr[data-step]').length >= 1, null, { timeout: 60000 });
    await page.waitForFunction(() => document.querySelectorAll('#log .line').length >= 1, null, { timeout: 60000 });
    const lines = await page.locator('#log .line').count();
    const steps = await page.locator('#timeline tbody tr[data-step]').count();
    log(`log: ${lines} lines; timeline: ${steps} steps; restarts ${await page.textContent('#restarts')}`);
    // Charts are inserted without their scripts or handlers.
    const scripts = await page.locator('.chart script, .chart foreignObject').count();
    if (scripts !== 0) throw new Error(`${scripts} script elements in the charts`);
    await shot(page, '02-instance.png');
    // The first screen of it, as a user sees it (docs/dashboard.png is one of these).
    await shot(page, '02-instance-screen.png', false);
  });

  await step(`Stop ${charted}: the state becomes exited`, async () => {
    const t0 = Date.now();
    await page.click('#btn-stop');
    await page.waitForSelector('#state[data-state="exited"]', { timeout: STOP_MS });
    timings.stop_seconds = secs(Date.now() - t0);
    await page.waitForFunction(() => /stop/.test(document.querySelector('#action-status')?.textContent || ''));
    log(`stopped after ${timings.stop_seconds} s; feedback: ${await page.textContent('#action-status')}`);
    if (!(await page.evaluate(() => window.__noReload === true))) throw new Error('the page reloaded');
    if (!(await page.isDisabled('#btn-stop'))) throw new Error('Stop is still enabled on an exited instance');
    await shot(page, '03-stopped.png');
  });

  await step(`Restart ${charted}, Kill ${INSTANCES[1]}: the states follow`, async () => {
    await page.click('#btn-restart');
    await page.waitForSelector('#state[data-state="running"]', { timeout: STOP_MS });
    await page.waitForFunction(() => /restart/.test(document.querySelector('#action-status')?.textContent || ''));
    log(`restarted; feedback: ${await page.textContent('#action-status')}`);
    await page.click('#home');
    await page.waitForSelector(`tr[data-instance="${charted}"][data-state="running"]`);
    await page.click(`tr[data-instance="${INSTANCES[1]}"] td.name a`);
    await page.waitForSelector(`#instance[data-name="${INSTANCES[1]}"] #state[data-state="running"]`);
    await page.click('#btn-kill');
    await page.waitForSelector('#state[data-state="exited"]', { timeout: STOP_MS });
    log(`killed; state ${await page.textContent('#state')}; feedback: ${await page.textContent('#action-status')}`);
    await page.click('#home');
    await page.waitForSelector(`tr[data-instance="${INSTANCES[1]}"][data-state="exited"]`);
  });

  const victim = MEMBERS[MEMBERS.length - 1];
  await step(`cluster ${CLUSTER}: 3 nodes and 3 links`, async () => {
    await page.click(`tr[data-cluster="${CLUSTER}"] td.name a`);
    await page.waitForSelector(`#cluster[data-name="${CLUSTER}"]`);
    await page.evaluate(() => {
      window.__noReload = true;
      // Every graph the page shows, as "nodes up/links", in order.
      window.__graphs = [];
      const record = () => {
        const svg = document.querySelector('#cluster-graph svg');
        if (!svg) return;
        const seen = `${svg.getAttribute('data-nodes')}/${svg.getAttribute('data-links')}`;
        if (window.__graphs[window.__graphs.length - 1] !== seen) window.__graphs.push(seen);
      };
      new MutationObserver(record).observe(document.querySelector('#cluster-graph'), { childList: true });
      record();
    });
    await page.waitForFunction(() => {
      const svg = document.querySelector('#cluster-graph svg');
      return svg && svg.getAttribute('data-nodes') === '3' && svg.getAttribute('data-links') === '3';
    }, null, { timeout: MESH_MS });
    await page.waitForSelector(`#members tr[data-instance="${victim}"][data-up="true"]`);
    await shot(page, '04-cluster.png');
  });

  await step(`kill -9 ${victim}'s QEMU: the graph shows the loss`, async () => {
    const before = await api(`/api/instances/${encodeURIComponent(victim)}`);
    const pid = before.qemu && before.qemu.pid;
    if (!Number.isInteger(pid) || pid <= 1) throw new Error(`no QEMU pid for ${victim}: ${JSON.stringify(before.qemu)}`);
    log(`kill -9 ${pid} (${victim}'s QEMU; ${before.restarts} restarts so far)`);
    const t0 = Date.now();
    process.kill(pid, 'SIGKILL');
    await page.waitForFunction(() => window.__graphs.includes('2/1'), null, { timeout: MESH_MS });
    timings.loss_seconds = secs(Date.now() - t0);
    log(`loss shown after ${timings.loss_seconds} s; graphs so far: ${await page.evaluate(() => window.__graphs.join(' '))}`);
    await shot(page, '05-cluster-loss.png');
    stepName = 'rejoin';
    await page.waitForFunction(() => {
      const g = window.__graphs;
      return g.lastIndexOf('3/3') > g.indexOf('2/1');
    }, null, { timeout: MESH_MS });
    timings.rejoin_seconds = secs(Date.now() - t0);
    await page.waitForSelector(`#members tr[data-instance="${victim}"][data-state="running"][data-up="true"]`);
    const restarts = Number(await attr(page, `#members tr[data-instance="${victim}"]`, 'data-restarts'));
    log(`rejoined after ${timings.rejoin_seconds} s; ${victim} restarts: ${restarts}; graphs: ${await page.evaluate(() => window.__graphs.join(' '))}`);
    if (!(restarts > (before.restarts || 0))) throw new Error(`${victim}'s restarts did not grow: ${before.restarts} -> ${restarts}`);
    if (!(await page.evaluate(() => window.__noReload === true))) throw new Error('the page reloaded');
    await shot(page, '06-cluster-rejoined.png');
  });

  await step('errors show in the banner', async () => {
    await page.goto(`${URL_WITH_TOKEN}#/instances/no-such-instance`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#banner:not([hidden])');
    await page.waitForFunction(() => /404/.test(document.querySelector('#banner').textContent));
    log(`banner: ${await page.textContent('#banner')}`);
    await shot(page, '07-banner-404.png');
    // The server gone: every request fails.
    await page.goto(`${URL_WITH_TOKEN}#/`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector(`tr[data-instance="${INSTANCES[1]}"]`);
    await page.waitForSelector('#banner', { state: 'hidden' });
    await page.route('**/api/**', (route) => route.abort('connectionrefused'));
    await page.waitForFunction(() => /reach/.test(document.querySelector('#banner').textContent), null, { timeout: 15000 });
    log(`banner: ${await page.textContent('#banner')}`);
    await shot(page, '08-banner-network.png');
    await page.unroute('**/api/**');
    await page.waitForSelector('#banner', { state: 'hidden', timeout: 15000 });
  });

  if (pageErrors.length) throw new Error(`JavaScript errors in the page:\n${pageErrors.join('\n')}`);
  if (foreign.length) throw new Error(`requests off the dashboard's origin:\n${foreign.join('\n')}`);
  if (unauthenticated.length) throw new Error(`requests without the token:\n${unauthenticated.slice(0, 10).join('\n')}`);
}

let failed = null;
try {
  await main();
} catch (e) {
  failed = e;
  try {
    const page = context && context.pages()[0];
    if (page) await shot(page, 'failure.png');
  } catch (_) { /* the failure matters more */ }
} finally {
  if (context) await context.close().catch(() => {});
  fs.rmSync(userData, { recursive: true, force: true });
}
console.log(`TIMINGS ${JSON.stringify({ total: secs(Date.now() - started), ...timings })}`);
if (failed) fail(`${stepName}: ${failed.message || failed}`);
console.error('dashboard.mjs: all steps passed');
