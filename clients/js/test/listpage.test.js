// The list of a user's own operations (GET /operations/), as a browser sees
// it: Chromium, driven by playwright-core, against the Go test server with
// its operations bound to the "user" cookie. Each row's progress follows the
// feed of the user's operations without reloading the page, and the page
// renders itself again once an operation finishes. CHROMIUM names the
// browser binary (default /usr/bin/chromium). Without it the tests are
// skipped, except in CI, where they fail.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchChromium, skipWithoutChromium } from './chromium.js';
import { startServer } from './server.js';

const skip = skipWithoutChromium('list page tests');
// Set by `npm run screenshot:list`: where to save the page, mid-progress.
const screenshotPath = process.env.ASYNCREPLY_LIST_SCREENSHOT;

let server;
let browser;

before(async () => {
  if (skip) {
    return;
  }
  [server, browser] = await Promise.all([
    startServer(['-owner-cookie', 'user']),
    launchChromium(),
  ]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Submits path as user and returns its operation's ID. */
async function submit(user, path) {
  const response = await fetch(server.url + path, { headers: { Cookie: `user=${user}` } });
  await response.arrayBuffer();
  assert.equal(response.status, 202, `GET ${path}`);
  const id = /\/operations\/([A-Za-z0-9_-]{22})$/.exec(response.headers.get('location'))?.[1];
  assert.ok(id, `GET ${path}: Location ${response.headers.get('location')}`);
  return id;
}

/** A page whose cookie names user, and the script errors and policy violations it reports. */
async function pageOf(user, { javaScript = true } = {}) {
  const context = await browser.newContext({ javaScriptEnabled: javaScript });
  await context.addCookies([{ name: 'user', value: user, url: server.url }]);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(err.message));
  page.on('console', (message) => {
    // A failed load is reported with its URL below; the browser's own
    // favicon request is the application's 404, not the page's.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(message.text());
    }
  });
  page.on('response', (response) => {
    if (response.status() >= 400 && !response.url().endsWith('/favicon.ico')) {
      problems.push(`${response.status()} ${response.url()}`);
    }
  });
  let loads = 0;
  page.on('load', () => loads++);
  return { page, problems, loads: () => loads, close: () => context.close() };
}

test('progress moves on the list without a reload, and a finished operation shows', { skip }, async () => {
  const { page, problems, loads, close } = await pageOf('erin');
  try {
    const slow = await submit('erin', '/reports/1?steps=8&step=400ms');
    const other = await submit('frank', '/reports/2?steps=8&step=400ms');
    await page.goto(`${server.url}/operations/`);
    const row = page.locator(`#op-${slow}`);
    await row.waitFor();
    assert.equal(await page.locator(`#op-${other}`).count(), 0, "frank's operation is on erin's page");

    // The feed moves the bar: several distinct values, one page load.
    const seen = new Set();
    while (seen.size < 3) {
      const value = await row.locator('progress').evaluate(
        (bar, previous) =>
          new Promise((resolve) => {
            const check = () => (String(bar.value) !== previous ? resolve(String(bar.value)) : setTimeout(check, 20));
            check();
          }),
        [...seen].at(-1) ?? '',
      );
      seen.add(value);
      if (seen.size === 2 && screenshotPath) {
        await page.screenshot({ path: screenshotPath, fullPage: true });
      }
    }
    assert.equal(loads(), 1, 'the page reloaded to show progress');
    assert.match(await row.locator('.message').textContent(), /^step \d of 8$/);

    // Once it finishes, the page renders itself again, with the row Succeeded.
    await page.locator(`#op-${slow} td.status.Succeeded`).waitFor({ timeout: 20_000 });
    assert.ok(loads() >= 2, 'the finished operation showed without the page rendering again');
    assert.deepEqual(problems, []);
  } finally {
    await close();
  }
});

test('without JavaScript the list is readable, and links each operation', { skip }, async () => {
  const id = await submit('gina', '/reports/3?steps=1&step=1ms');
  const { page, close } = await pageOf('gina', { javaScript: false });
  try {
    await page.goto(`${server.url}/operations/`);
    const link = page.locator(`#op-${id} a`);
    assert.equal(await link.getAttribute('href'), `/operations/${id}`);
    await link.click();
    // The monitor URL redirects a finished operation to its response.
    await page.waitForURL(`${server.url}/operations/${id}/response`);
    assert.deepEqual(JSON.parse(await page.locator('body').textContent()), { report: '3', steps: 1 });
  } finally {
    await close();
  }
});
