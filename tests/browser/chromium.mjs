// How every browser script here starts Debian's Chromium: headless, as
// root (no sandbox), and without the background connections that this
// offline machine refuses (many at a time) and that leak off loopback.
export const CHROMIUM = '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-sync',
];

// Options for playwright-core's `chromium.launchPersistentContext(freshDir, ...)`
// (a persistent context, since `launch` refuses `--user-data-dir`).
export function launchOptions(extra = {}) {
  return { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, ...extra };
}
