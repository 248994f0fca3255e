// Headless Chromium for the browser tests: Debian's chromium driven by
// playwright-core (never a browser download). browserSkip says why the tests
// cannot run here (false when they can); launchBrowser() starts one with the
// flags this closed network needs.
import fs from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

function loadPlaywright() {
  try {
    return require('playwright-core');
  } catch {
    return null;
  }
}

export const chromiumPath = process.env.WARREN_CHROMIUM || '/usr/bin/chromium';
const pw = loadPlaywright();
export const browserSkip = !pw
  ? 'npm package playwright-core is not installed'
  : !fs.existsSync(chromiumPath)
    ? chromiumPath + ' not found (apt-get install chromium)'
    : false;

export function launchBrowser() {
  return pw.chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
