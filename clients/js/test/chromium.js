// Chromium for the browser tests: Debian's build (CHROMIUM names another),
// driven by playwright-core. Without it the tests are skipped, except in
// CI, where they fail.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';

const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const haveChromium = existsSync(chromiumPath);

/**
 * Why the browser tests named what are skipped, or false when they run;
 * says so once on standard output.
 */
export function skipWithoutChromium(what) {
  const skip = !haveChromium && !process.env.CI && `no Chromium at ${chromiumPath} (install it, or set CHROMIUM)`;
  if (skip) {
    console.log(`# ${what} skipped: ${skip}`);
  }
  return skip;
}

/**
 * Launches headless Chromium with nothing of its own on the network: this
 * machine's closed network refuses its background connections.
 */
export async function launchChromium() {
  assert.ok(haveChromium, `no Chromium at ${chromiumPath}: CI must install it`);
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-quic',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}
