// watchOperations against the real Go server (./server/main.go), its
// operations bound to the "user" cookie: over server-sent events in Node,
// and over a WebSocket in Chromium when it is there (CHROMIUM, as in
// browser.test.js).

import assert from 'node:assert/strict';
import { dirname, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { FeedError, watchOperations } from '../src/index.js';
import { launchChromium, skipWithoutChromium } from './chromium.js';
import { startServer } from './server.js';

const here = dirname(fileURLToPath(import.meta.url));
const noBrowser = skipWithoutChromium('the feed in a browser');

let server;
before(async () => {
  server = await startServer(['-owner-cookie', 'user', '-static', resolve(here, '../src')]);
});
after(async () => {
  await server?.stop();
});

const as = (user) => ({ Cookie: `user=${user}` });

// submit starts a quick report as user and returns its monitor URL.
async function submit(user, id) {
  const response = await fetch(`${server.url}/reports/${id}?steps=2&step=20ms`, { headers: as(user) });
  assert.equal(response.status, 202);
  await response.body?.cancel();
  return new URL(response.headers.get('Location'), server.url).href;
}

// watch collects the changes of user's feed, and resolves until(predicate)
// once a change satisfies it.
function watch(user, options = {}) {
  let opened;
  const open = new Promise((resolve) => {
    opened = resolve;
  });
  const changes = [];
  const errors = [];
  const waiters = [];
  const watcher = watchOperations(
    `${server.url}/operations/events`,
    (operation, change) => {
      changes.push({ operation, id: change.id });
      for (const w of waiters.splice(0)) {
        if (!w.check()) {
          waiters.push(w);
        }
      }
    },
    { headers: as(user), onError: (err) => errors.push(err), onOpen: () => opened(), ...options },
  );
  const until = (predicate) =>
    new Promise((resolve) => {
      const w = { check: () => changes.some(predicate) && (resolve(), true) };
      if (!w.check()) {
        waiters.push(w);
      }
    });
  return { changes, errors, until, open, close: () => watcher.close() };
}

const doneOf = (monitor) => (c) => c.operation.links.self === monitor && c.operation.done;

test('the feed shows the caller its own operations, and none of another user', async () => {
  const alice = watch('alice');
  const bob = watch('bob');
  try {
    // The feed starts from now: it must be open before the submit.
    await Promise.all([alice.open, bob.open]);
    const hers = await submit('alice', 1);
    await alice.until(doneOf(hers));
    const his = await submit('bob', 2);
    await bob.until(doneOf(his));
    assert.ok(alice.changes.every((c) => c.operation.links.self === hers), JSON.stringify(alice.changes));
    assert.ok(bob.changes.every((c) => c.operation.links.self === his), JSON.stringify(bob.changes));
    assert.equal(alice.changes.at(-1).operation.status, 'Succeeded');
    assert.equal(new Set(alice.changes.map((c) => c.id)).size, alice.changes.length, 'a change was delivered twice');
  } finally {
    alice.close();
    bob.close();
  }
});

test('a watcher given a cursor resumes after it, missing nothing', async () => {
  const first = watch('carol');
  await first.open;
  const one = await submit('carol', 3);
  await first.until(doneOf(one));
  first.close();
  const cursor = first.changes.at(-1).id;

  const two = await submit('carol', 4);
  const resumed = watch('carol', { after: cursor });
  try {
    await resumed.until(doneOf(two));
    assert.ok(!resumed.changes.some((c) => c.id === cursor), 'the change named by the cursor came again');
  } finally {
    resumed.close();
  }
});

test('without credentials the feed is refused, and watching stops', async () => {
  const errors = [];
  let onFailure;
  const watcher = watchOperations(`${server.url}/operations/events`, () => assert.fail('a change without credentials'), {
    headers: {},
    onError: (err) => {
      errors.push(err);
      onFailure();
    },
  });
  await new Promise((resolve) => {
    onFailure = resolve;
  });
  watcher.close();
  assert.ok(errors[0] instanceof FeedError, String(errors[0]));
  assert.equal(errors[0].status, 404);
});

test('in a browser, the feed comes over a WebSocket', { skip: noBrowser }, async () => {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    await page.goto(`${server.url}/`);
    const result = await page.evaluate(async () => {
      document.cookie = 'user=dave; path=/';
      const sockets = [];
      const Native = window.WebSocket;
      window.WebSocket = class extends Native {
        constructor(url) {
          super(url);
          sockets.push(url);
        }
      };
      const { watchOperations } = await import('/static/index.js');
      const changes = [];
      let submitted;
      let opened;
      const open = new Promise((resolve) => {
        opened = resolve;
      });
      const done = new Promise((resolve) => {
        const watcher = watchOperations(
          '/operations/events',
          (operation) => {
            changes.push(operation);
            if (operation.links.self === submitted && operation.done) {
              watcher.close();
              resolve();
            }
          },
          { onOpen: () => opened() },
        );
      });
      await open;
      const response = await fetch('/reports/5?steps=2&step=20ms');
      submitted = new URL(response.headers.get('Location'), location.href).href;
      await done;
      return { sockets, statuses: changes.map((c) => c.status) };
    });
    assert.equal(result.sockets.length, 1);
    assert.match(result.sockets[0], /^ws:\/\/.*\/operations\/events$/);
    assert.equal(result.statuses.at(-1), 'Succeeded');
  } finally {
    await browser.close();
  }
});
