// Drives examples/chat in a real browser (Debian's chromium through
// playwright-core): one page sends a message and sees it come back over
// its websocket; a second page sees messages from the first, and the
// first sees the second's (broadcast).
//
//   CHAT_URL=http://127.0.0.1:PORT/ SCREENSHOT_DIR=DIR node tests/browser/chat.mjs
//
// Exits 0 on success; otherwise prints what went wrong and exits 1.
// Needs `make tools` (playwright-core in tests/browser/node_modules, and
// chromium).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CHROMIUM, launchOptions } from './chromium.mjs';

const TIMEOUT_MS = Number(process.env.CHAT_TIMEOUT_MS || 60000);

function fail(message) {
  console.error(`chat.mjs: FAIL: ${message}`);
  process.exit(1);
}

const url = process.env.CHAT_URL;
const shots = process.env.SCREENSHOT_DIR;
if (!url) fail('CHAT_URL is not set (e.g. http://127.0.0.1:8080/)');
if (!shots) fail('SCREENSHOT_DIR is not set');
if (!fs.existsSync(CHROMIUM)) fail(`${CHROMIUM} is missing: \`make tools\` installs it`);

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  fail(`playwright-core cannot be loaded (${e.message}): \`make tools\` installs it in tests/browser/node_modules`);
}

fs.mkdirSync(shots, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'unibeam-chat-chromium-'));
let context;
const started = Date.now();
const step = (what) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${what}`);

async function openChat(label) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on('console', (m) => console.log(`  ${label} console: ${m.text()}`));
  page.on('pageerror', (e) => console.log(`  ${label} page error: ${e.message}`));
  await page.goto(url, { timeout: TIMEOUT_MS });
  // The send button is enabled once the websocket is open.
  await page.waitForSelector('#send:not([disabled])', { timeout: TIMEOUT_MS });
  step(`${label}: page loaded, websocket open (${await page.textContent('#status')})`);
  return page;
}

async function say(page, text) {
  await page.fill('#msg', text);
  await page.click('#send');
}

async function expectMessage(page, label, text) {
  try {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('#log li')].some((li) => li.textContent === t),
      text,
      { timeout: TIMEOUT_MS },
    );
  } catch (e) {
    const seen = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent)).catch(() => []);
    throw new Error(`${label} never showed ${JSON.stringify(text)}; it shows ${JSON.stringify(seen)} (${e.message.split('\n')[0]})`);
  }
  step(`${label} shows ${JSON.stringify(text)}`);
}

let a;
let b;
try {
  context = await chromium.launchPersistentContext(profile, launchOptions({
    timeout: TIMEOUT_MS,
  }));
  step('chromium started');
  const tag = `${process.pid}-${Date.now()}`;

  a = await openChat('page A');
  const echo = `hello from A ${tag}`;
  await say(a, echo);
  await expectMessage(a, 'page A', echo);

  b = await openChat('page B');
  const fromA = `A to everyone ${tag}`;
  await say(a, fromA);
  await expectMessage(b, 'page B', fromA);
  await expectMessage(a, 'page A', fromA);
  const fromB = `B to everyone ${tag}`;
  await say(b, fromB);
  await expectMessage(a, 'page A', fromB);
  await expectMessage(b, 'page B', fromB);

  await a.screenshot({ path: path.join(shots, 'chat-page-a.png'), fullPage: true });
  await b.screenshot({ path: path.join(shots, 'chat-page-b.png'), fullPage: true });
  step(`screenshots in ${shots}`);
  console.log('chat.mjs: OK: echo and broadcast both seen in the browser');
} catch (e) {
  for (const [page, name] of [[a, 'a'], [b, 'b']]) {
    if (page) await page.screenshot({ path: path.join(shots, `chat-failed-${name}.png`) }).catch(() => {});
  }
  await context?.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  fail(e.message);
}
await context.close();
fs.rmSync(profile, { recursive: true, force: true });
