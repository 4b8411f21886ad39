// The operator's dashboard in a real browser: Chromium, driven by
// playwright-core, against the Go test server's admin listener (-admin).
// CHROMIUM names the browser binary (default /usr/bin/chromium). Without it
// the tests are skipped, except in CI, where they fail.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchChromium, skipWithoutChromium } from './chromium.js';
import { startServer } from './server.js';

const skip = skipWithoutChromium('dashboard tests');
// Set by `npm run screenshot:dashboard`: where to save the dashboard.
const screenshotPath = process.env.ASYNCREPLY_DASHBOARD_SCREENSHOT;

let server;
let browser;

before(async () => {
  if (skip) {
    return;
  }
  [server, browser] = await Promise.all([
    startServer(['-admin']),
    launchChromium(),
  ]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Submits path to the application and returns its operation's ID. */
async function submit(path) {
  const response = await fetch(server.url + path);
  await response.arrayBuffer();
  assert.equal(response.status, 202, `GET ${path}`);
  const id = /\/operations\/([A-Za-z0-9_-]{22})$/.exec(response.headers.get('location'))?.[1];
  assert.ok(id, `GET ${path}: Location ${response.headers.get('location')}`);
  return id;
}

/** Long-polls an operation until it has finished, and returns the answer's status. */
async function finished(id) {
  for (let i = 0; i < 10; i++) {
    const response = await fetch(`${server.url}/operations/${id}`, { headers: { Prefer: 'wait=5' }, redirect: 'manual' });
    await response.arrayBuffer();
    if (response.status !== 202) {
      return response.status;
    }
  }
  throw new Error(`operation ${id} did not finish`);
}

/** Reports the page's script errors and blocked resources (its CSP). */
function collectProblems(page) {
  const problems = [];
  page.on('pageerror', (err) => problems.push(err.message));
  page.on('console', (message) => {
    if (message.type() === 'error') {
      problems.push(`${message.text()} ${message.location().url}`);
    }
  });
  return problems;
}

const row = (table, id) => `#${table} tr[data-id="${id}"]`;

test('operations appear, progress moves without reloads, a failure shows its detail, cancel works', { skip }, async () => {
  await finished(await submit('/reports/done'));
  const failed = await submit('/fail');
  assert.equal(await finished(failed), 502);
  await finished(await submit('/panic'));
  const report = await submit('/reports/slow?steps=12&step=700ms');
  await submit('/reports/steady?steps=5&step=2s');
  const hang = await submit('/hang');

  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  try {
    const page = await context.newPage();
    const problems = collectProblems(page);
    const navigations = [];
    page.on('framenavigated', (frame) => frame === page.mainFrame() && navigations.push(frame.url()));
    const first = await page.goto(`${server.adminURL}/`);
    assert.equal(first.status(), 200);

    await page.locator(row('in-flight', report)).waitFor();
    await page.locator(row('in-flight', hang)).waitFor();
    const failure = await page.locator(row('failures', failed)).textContent();
    assert.match(failure, /502 Upstream unreachable/);
    assert.match(failure, /The report service did not answer\./);
    assert.ok(Number(await page.locator('[data-count="Failed"]').textContent()) >= 2, 'failed count');

    // The page polls the summary: the report's bar moves on the same page.
    const samples = [];
    let screenshot;
    const deadline = Date.now() + 20_000;
    while (samples.length < 3 && Date.now() < deadline) {
      const bar = page.locator(`${row('in-flight', report)} progress`);
      const value = await bar.evaluate((el) => el.value, undefined, { timeout: 5_000 }).catch(() => undefined);
      if (value === undefined) {
        break; // finished, and gone from the list
      }
      if (samples.at(-1) !== value) {
        samples.push(value);
      }
      if (screenshotPath && !screenshot && value >= 25) {
        screenshot = page.screenshot({ path: screenshotPath, fullPage: true });
        await screenshot;
      }
      await page.waitForTimeout(250);
    }
    assert.ok(samples.length >= 3, `the progress bar showed only ${samples}`);
    for (let i = 1; i < samples.length; i++) {
      assert.ok(samples[i] > samples[i - 1], `the progress bar went back: ${samples}`);
    }
    assert.equal(navigations.length, 1, `the page reloaded: ${navigations.join(', ')}`);
    assert.ok(screenshotPath === undefined || screenshot, 'no screenshot taken');

    // Cancel posts the row's form and lands back on the page, which says so.
    await page.locator(row('in-flight', hang)).getByRole('button', { name: 'Cancel' }).click();
    await page.waitForURL(/\?canceled=/);
    assert.match(await page.locator('.notice').textContent(), new RegExp(`Operation ${hang} canceled`));
    assert.equal(await page.locator(row('in-flight', hang)).count(), 0, 'the canceled operation is still listed');
    const poll = await fetch(`${server.url}/operations/${hang}`);
    await poll.arrayBuffer();
    assert.equal(poll.status, 404, "the canceled operation's monitor URL");
    let canceled;
    for (let i = 0; i < 50 && canceled !== '1'; i++) {
      canceled = await (await fetch(`${server.url}/canceled`)).text();
      if (canceled !== '1') {
        await page.waitForTimeout(100);
      }
    }
    assert.equal(canceled, '1', "the canceled replay's context did not end");

    assert.deepEqual(problems.filter((text) => !/favicon/.test(text)), []);
  } finally {
    await context.close();
  }
});

test('without JavaScript, the page reads and its forms re-run and cancel', { skip }, async () => {
  const hang = await submit('/hang');
  const context = await browser.newContext({ javaScriptEnabled: false });
  try {
    const page = await context.newPage();
    await page.goto(`${server.adminURL}/`);
    await page.locator(row('in-flight', hang)).waitFor();
    assert.match(await page.locator('main').textContent(), /recorded request is dropped when an operation finishes, with its credentials/);

    await page.locator(row('in-flight', hang)).getByRole('button', { name: 'Re-run' }).click();
    await page.waitForURL(/\?rerun=/);
    const again = new URL(page.url()).searchParams.get('rerun');
    assert.notEqual(again, hang);
    assert.match(await page.locator('.notice').textContent(), new RegExp(`Re-run started as operation ${again}`));
    await page.locator(row('in-flight', again)).waitFor();

    for (const id of [again, hang]) {
      await page.locator(row('in-flight', id)).getByRole('button', { name: 'Cancel' }).click();
      await page.waitForURL(new RegExp(`\\?canceled=${id}`));
      assert.equal(await page.locator(row('in-flight', id)).count(), 0, `${id} is still listed`);
    }
  } finally {
    await context.close();
  }
});
