// The waiting page and the client in a real browser: Chromium, driven by
// playwright-core, against the Go test server. CHROMIUM names the browser
// binary (default /usr/bin/chromium). Without it the tests are skipped,
// except in CI, where they fail.

import assert from 'node:assert/strict';
import { dirname, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { launchChromium, skipWithoutChromium } from './chromium.js';
import { startServer } from './server.js';

const skip = skipWithoutChromium('browser tests');
// Set by `npm run screenshot`: where to save the waiting page, mid-progress.
const screenshotPath = process.env.ASYNCREPLY_SCREENSHOT;

const here = dirname(fileURLToPath(import.meta.url));
let server;
let browser;

before(async () => {
  if (skip) {
    return;
  }
  [server, browser] = await Promise.all([
    startServer(['-static', resolve(here, '../src')]),
    launchChromium(),
  ]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const resultURL = /\/operations\/[^/]+\/response$/;

test('without JavaScript, the waiting page refreshes itself to the answer', { skip }, async () => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  try {
    const page = await context.newPage();
    const first = await page.goto(`${server.url}/reports/nojs?steps=3&step=400ms&format=html`);
    assert.equal(first.status(), 202);
    assert.match(await page.locator('h1').textContent(), /Working on your request/);

    await page.waitForURL(resultURL, { timeout: 15_000 });
    assert.equal(await page.locator('h1').textContent(), 'Report nojs');
  } finally {
    await context.close();
  }
});

test('with JavaScript, progress moves without reloads, then the page becomes the answer', { skip }, async () => {
  const context = await browser.newContext({ viewport: { width: 800, height: 480 } });
  try {
    const page = await context.newPage();
    const navigations = [];
    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame()) {
        navigations.push(frame.url());
      }
    });
    const problems = [];
    page.on('pageerror', (err) => problems.push(err.message));
    page.on('console', (message) => {
      if (message.type() === 'error') {
        problems.push(message.text());
      }
    });

    const first = await page.goto(`${server.url}/reports/live?steps=10&step=300ms&format=html`);
    assert.equal(first.status(), 202);
    const samples = [];
    let screenshot;
    const deadline = Date.now() + 15_000;
    while (!resultURL.test(page.url()) && Date.now() < deadline) {
      let value;
      try {
        value = await page.locator('#progress').evaluate((bar) => bar.value, undefined, { timeout: 1000 });
      } catch {
        break; // the page is on its way to the answer
      }
      if (samples.at(-1) !== value) {
        samples.push(value);
      }
      if (screenshotPath && !screenshot && value >= 40 && value <= 70) {
        screenshot = page.screenshot({ path: screenshotPath });
        await screenshot;
      }
      await page.waitForTimeout(100);
    }
    // A blocked script or style (Content-Security-Policy) is reported here.
    assert.deepEqual(problems.filter((text) => !/favicon/.test(text)), []);
    await page.waitForURL(resultURL, { timeout: 5_000 });
    assert.equal(await page.locator('h1').textContent(), 'Report live');

    for (let i = 1; i < samples.length; i++) {
      assert.ok(samples[i] > samples[i - 1], `the progress bar went back: ${samples}`);
    }
    assert.ok(samples.length >= 4, `the progress bar showed only ${samples}`);
    assert.deepEqual(
      navigations.map((url) => resultURL.test(url)),
      [false, true],
      `the page loaded ${navigations.join(', ')}: want the waiting page once, then the answer`,
    );
    assert.ok(screenshotPath === undefined || screenshot, 'no screenshot taken mid-progress');
  } finally {
    await context.close();
  }
});

test('the client follows an operation with EventSource in the browser, and aborts', { skip }, async () => {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(`${server.url}/`);
    const result = await page.evaluate(async () => {
      let sources = 0;
      const NativeEventSource = window.EventSource;
      window.EventSource = class extends NativeEventSource {
        constructor(...args) {
          super(...args);
          sources++;
        }
      };
      const deleted = [];
      const nativeFetch = window.fetch;
      window.fetch = (input, init) => {
        if (init?.method === 'DELETE') {
          deleted.push(String(input));
        }
        return nativeFetch(input, init);
      };
      const { asyncFetch } = await import('/static/index.js');

      const seen = [];
      const response = await asyncFetch('/reports/browser?steps=4&step=150ms', undefined, {
        onProgress: (p) => seen.push(p.percent),
      });
      const done = { status: response.status, body: await response.json(), url: response.url, seen, sources };

      const controller = new AbortController();
      const aborted = await asyncFetch('/hang', undefined, {
        signal: controller.signal,
        onProgress: (p) => p.status === 'Running' && controller.abort(),
      }).then(
        () => 'resolved',
        (err) => err.name,
      );
      const afterAbort = deleted.length === 1 ? (await nativeFetch(deleted[0])).status : undefined;
      return { done, aborted, deleted, afterAbort, sources };
    });

    assert.equal(result.done.status, 200);
    assert.deepEqual(result.done.body, { report: 'browser', steps: 4 });
    assert.match(result.done.url, resultURL);
    assert.deepEqual(result.done.seen, [...result.done.seen].sort((a, b) => a - b), 'progress went back');
    assert.ok(new Set(result.done.seen).size >= 3, `progress seen: ${result.done.seen}`);
    assert.equal(result.done.sources, 1, 'the first operation was followed with one EventSource');
    assert.equal(result.sources, 2, 'so was the second');
    assert.equal(result.aborted, 'AbortError');
    assert.equal(result.deleted.length, 1, 'one DELETE');
    assert.equal(result.afterAbort, 404, 'the operation URL after the abort');
  } finally {
    await context.close();
  }
});
