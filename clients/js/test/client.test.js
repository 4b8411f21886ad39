// The client against the real Go server (./server/main.go).

import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';

import { asyncFetch } from '../src/index.js';
import { startServer } from './server.js';

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  globalThis.fetch = realFetch;
  await server?.stop();
});

// Every request the client makes, with the status it got.
const realFetch = globalThis.fetch;
let sent = [];
globalThis.fetch = async (input, init) => {
  const entry = {
    method: init?.method ?? (input instanceof Request ? input.method : 'GET'),
    url: input instanceof Request ? input.url : String(input),
    at: Date.now(),
  };
  sent.push(entry);
  const response = await realFetch(input, init);
  entry.status = response.status;
  entry.location = response.headers.get('Location');
  return response;
};
beforeEach(() => {
  sent = [];
});

// The operation's monitor URL, from the client's first request.
function monitorURL() {
  const submit = sent.find((r) => r.status === 202 && r.location);
  assert.ok(submit, `no 202 with a Location among ${JSON.stringify(sent)}`);
  return new URL(submit.location, submit.url).href;
}

function polls(monitor) {
  return sent.filter((r) => r.url === monitor && r.method === 'GET');
}

function streams(monitor) {
  return sent.filter((r) => r.url === `${monitor}/events`);
}

async function snapshot(response) {
  return {
    status: response.status,
    contentType: response.headers.get('Content-Type'),
    report: response.headers.get('X-Report'),
    body: await response.text(),
  };
}

// Progress must never go back, and must have been seen on its way.
function assertIncreasing(seen, { minSteps }) {
  const percents = seen.map((p) => p.percent);
  for (let i = 1; i < percents.length; i++) {
    assert.ok(percents[i] >= percents[i - 1], `progress went back: ${percents}`);
  }
  const distinct = new Set(seen.filter((p) => p.status !== 'Succeeded').map((p) => p.percent));
  assert.ok(distinct.size >= minSteps, `saw ${distinct.size} steps of progress before the end, want ${minSteps}: ${JSON.stringify(seen)}`);
  assert.deepEqual(seen.at(-1), { percent: 100, message: seen.at(-1).message, status: 'Succeeded' });
}

test('a synchronous answer is returned as is', async () => {
  const response = await asyncFetch(`${server.url}/plain`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('X-Plain'), 'yes');
  assert.equal(await response.text(), 'synchronous');
  assert.equal(sent.length, 1);
});

test("an application's own 202 without a monitor URL is returned as is", async () => {
  const response = await asyncFetch(`${server.url}/queue`, { method: 'POST' });
  assert.equal(response.status, 202);
  assert.equal(await response.text(), 'queued');
  assert.equal(sent.length, 1);
});

test('follows server-sent events to the same answer as a synchronous call', async () => {
  const query = '?steps=4&step=150ms';
  const seen = [];

  const [want, response] = await Promise.all([
    realFetch(`${server.url}/sync/reports/7${query}`).then(snapshot),
    asyncFetch(`${server.url}/reports/7${query}`, undefined, { onProgress: (p) => seen.push(p) }),
  ]);

  assert.deepEqual(await snapshot(response), want);
  assert.ok(response.redirected && response.url.endsWith('/response'), `final URL ${response.url}`);
  assertIncreasing(seen, { minSteps: 3 });
  assert.deepEqual(seen.at(-1), { percent: 100, message: 'step 4 of 4', status: 'Succeeded' });
  const monitor = monitorURL();
  assert.equal(streams(monitor).length, 1, 'one event stream');
  assert.equal(polls(monitor).length, 1, 'a single poll, for the answer once the events said done');
});

test('polls, honouring Retry-After, when events are turned off', async () => {
  const query = '?steps=3&step=700ms';
  const seen = [];

  const [want, response] = await Promise.all([
    realFetch(`${server.url}/sync/reports/8${query}`).then(snapshot),
    asyncFetch(`${server.url}/reports/8${query}`, undefined, {
      events: false,
      pollInterval: 100,
      onProgress: (p) => seen.push(p),
    }),
  ]);

  assert.deepEqual(await snapshot(response), want);
  assertIncreasing(seen, { minSteps: 2 });
  const monitor = monitorURL();
  assert.equal(streams(monitor).length, 0, 'no event stream');
  const times = [sent[0].at, ...polls(monitor).map((r) => r.at)];
  assert.ok(times.length >= 3, `${times.length - 1} polls`);
  for (let i = 1; i < times.length; i++) {
    // Retry-After: 1 from the server wins over the 100 ms floor.
    assert.ok(times[i] - times[i - 1] >= 950, `polls ${times[i] - times[i - 1]} ms apart, want Retry-After's 1 s`);
  }
});

test('pollInterval is a floor under Retry-After', async () => {
  await asyncFetch(`${server.url}/reports/9?steps=2&step=600ms`, undefined, { events: false, pollInterval: 1600 });
  const times = [sent[0].at, ...polls(monitorURL()).map((r) => r.at)];
  assert.ok(times.length >= 2);
  for (let i = 1; i < times.length; i++) {
    assert.ok(times[i] - times[i - 1] >= 1550, `polls ${times[i] - times[i - 1]} ms apart, want at least 1.6 s`);
  }
});

test('replays the body and sends the credentials again', async () => {
  const init = {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: 'Bearer t0ken' },
    body: JSON.stringify({ export: 'all', rows: [1, 2, 3] }),
  };
  const want = await realFetch(`${server.url}/sync/echo`, init);

  const response = await asyncFetch(`${server.url}/echo`, init);

  assert.equal(response.status, 201);
  assert.equal(response.headers.get('Content-Type'), want.headers.get('Content-Type'));
  assert.equal(response.headers.get('X-Echo-Authorization'), 'Bearer t0ken');
  assert.equal(await response.text(), await want.text());
  const monitor = monitorURL();
  assert.equal(streams(monitor).length, 1, 'events over fetch, which can send the Authorization header');
});

test('a stored error response is the answer, like any other', async () => {
  const want = await snapshot(await realFetch(`${server.url}/sync/teapot`));
  const response = await asyncFetch(`${server.url}/teapot`);
  assert.deepEqual(await snapshot(response), want);
  assert.equal(response.status, 418);
});

for (const events of [true, false]) {
  test(`a failed operation yields its status and problem details (events: ${events})`, async () => {
    const seen = [];
    const response = await asyncFetch(`${server.url}/fail`, undefined, { events, onProgress: (p) => seen.push(p) });
    assert.equal(response.status, 502);
    assert.equal(response.headers.get('Content-Type'), 'application/problem+json');
    const problem = await response.json();
    assert.equal(problem.status, 502);
    assert.equal(problem.title, 'Upstream unreachable');
    if (events) {
      assert.equal(seen.at(-1)?.status, 'Failed');
    }
  });
}

test('a panicking handler is a 500', async () => {
  const response = await asyncFetch(`${server.url}/panic`, undefined, { events: false });
  assert.equal(response.status, 500);
  assert.equal(response.headers.get('Content-Type'), 'application/problem+json');
});

for (const events of [true, false]) {
  test(`aborting deletes the operation and rejects with the AbortError (events: ${events})`, async () => {
    const canceledBefore = Number(await (await realFetch(`${server.url}/canceled`)).text());
    const controller = new AbortController();
    const started = asyncFetch(`${server.url}/hang`, undefined, {
      events,
      signal: controller.signal,
      onProgress: (p) => {
        if (p.status === 'Running') {
          controller.abort();
        }
      },
    });

    await assert.rejects(started, (err) => err.name === 'AbortError' && err === controller.signal.reason);

    const monitor = monitorURL();
    assert.ok(
      sent.some((r) => r.url === monitor && r.method === 'DELETE' && r.status === 204),
      `no DELETE of ${monitor}: ${JSON.stringify(sent)}`,
    );
    assert.equal((await realFetch(monitor)).status, 404, 'the operation URL after the abort');
    for (let i = 0; ; i++) {
      const canceled = Number(await (await realFetch(`${server.url}/canceled`)).text());
      if (canceled > canceledBefore) {
        break;
      }
      assert.ok(i < 100, "the handler's context was never canceled");
      await delay(50);
    }
  });
}

test('an already aborted signal sends nothing', async () => {
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(asyncFetch(`${server.url}/reports/1`, undefined, { signal: controller.signal }), { name: 'AbortError' });
  assert.equal(sent.length, 0);
});

test('an exception from onProgress reaches the caller', async () => {
  const boom = new Error('boom');
  await assert.rejects(
    asyncFetch(`${server.url}/reports/2?steps=2&step=100ms`, undefined, {
      onProgress: () => {
        throw boom;
      },
    }),
    (err) => err === boom,
  );
});
