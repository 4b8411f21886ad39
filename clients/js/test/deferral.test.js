// asyncreply/server's side of the handshake against real servers: the same
// application on Express 5, Express 4 and plain node:http, asked as the
// gateway asks it.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { asyncreply, Recorder, respondToAsync } from '../src/server.js';
import { APPS, listen, progressServer, request, serveApp, silentListener } from './apps.js';

// Short, so that a test of a progress server that never answers is short too.
const PROGRESS_TIMEOUT = 300;

const DEFERRABLE = { 'Asyncreply-Deferrable': '1' };

function replayHeaders(progressURL, operation = 'op-1') {
  return { 'Asyncreply-Operation': operation, 'Asyncreply-Progress': progressURL };
}

for (const kind of Object.keys(APPS)) {
  describe(kind, () => {
    let app;
    let progress;
    before(async () => {
      [app, progress] = await Promise.all([serveApp(kind, { progressTimeout: PROGRESS_TIMEOUT }), progressServer()]);
    });
    after(async () => {
      await Promise.all([app?.close(), progress?.close()]);
    });

    test('a deferrable first arrival is deferred, with the parameters exact', async () => {
      const before = app.ran.report;
      const response = await request(`${app.url}/reports/7`, { headers: DEFERRABLE });
      assert.equal(response.status, 202);
      assert.equal(response.headers.get('Asyncreply-Defer'), '1; timeout=3600; retention=604800; wait=2');
      assert.equal(response.headers.get('Content-Length'), '0');
      assert.equal(await response.text(), '');
      assert.equal(app.ran.report, before, 'the handler ran for a deferred request');
    });

    test('without Asyncreply-Deferrable the handler runs', async () => {
      for (const headers of [{}, { 'Asyncreply-Deferrable': '0' }]) {
        const before = app.ran.report;
        const response = await request(`${app.url}/reports/7`, { headers });
        assert.equal(response.status, 200, JSON.stringify(headers));
        assert.equal(response.headers.get('Asyncreply-Defer'), null);
        assert.deepEqual(await response.json(), { report: '7', replay: false, operation: null });
        assert.equal(app.ran.report, before + 1);
      }
    });

    test('respondToAsync defers only the requests if accepts, and never asks it on the replay', async () => {
      const pdf = await request(`${app.url}/exports?format=pdf`, { headers: DEFERRABLE });
      assert.equal(pdf.status, 202);
      assert.equal(pdf.headers.get('Asyncreply-Defer'), '1');
      await pdf.body?.cancel();

      const csv = await request(`${app.url}/exports?format=csv`, { headers: DEFERRABLE });
      assert.equal(csv.status, 200);
      assert.deepEqual(await csv.json(), { format: 'csv', replay: false });

      const asked = app.ran.exportCondition;
      const replay = await request(`${app.url}/exports?format=pdf`, { headers: replayHeaders(progress.url) });
      assert.equal(replay.status, 200);
      assert.deepEqual(await replay.json(), { format: 'pdf', replay: true });
      assert.equal(app.ran.exportCondition, asked, 'if was asked on the replay');
    });

    test('res.deferAsync defers from inside the handler', async () => {
      const { rebuild, rebuildWork } = app.ran;
      const response = await request(`${app.url}/rebuild`, { method: 'POST', headers: DEFERRABLE, body: 'payload' });
      assert.equal(response.status, 202);
      assert.equal(response.headers.get('Asyncreply-Defer'), '1; wait=0');
      assert.equal(await response.text(), '');
      assert.equal(app.ran.rebuild, rebuild + 1);
      assert.equal(app.ran.rebuildWork, rebuildWork, 'the work was done on the first arrival');
    });

    test('on the replay the handler runs and POSTs its progress to the gateway', async () => {
      const reported = progress.reports.length;
      const response = await request(`${app.url}/rebuild`, {
        method: 'POST',
        headers: { ...replayHeaders(progress.url, 'op-42'), Cookie: 'session=alice' },
        body: 'payload',
      });
      assert.equal(response.status, 201);
      const body = await response.json();
      assert.deepEqual(
        { ...body, progressMillis: undefined },
        { replay: true, operation: 'op-42', cookie: 'session=alice', body: 'payload', progressMillis: undefined },
      );
      // The handler awaited the report, so it has arrived.
      assert.deepEqual(progress.reports.slice(reported), [
        {
          method: 'POST',
          path: '/operations/op-1/progress',
          contentType: 'application/json',
          body: { percent: 40, message: 'halfway' },
        },
      ]);
    });

    test('a progress report holds the handler no longer than progressTimeout when the gateway never answers', async () => {
      const silent = await silentListener();
      try {
        const response = await request(`${app.url}/rebuild`, { method: 'POST', headers: replayHeaders(silent.url), body: 'x' });
        assert.equal(response.status, 201);
        const { progressMillis } = await response.json();
        assert.ok(silent.connections >= 1, 'the report was never sent');
        assert.ok(progressMillis < PROGRESS_TIMEOUT + 1000, `the report held the handler ${progressMillis} ms`);
        // The report was abandoned, not left waiting on its connection.
        await silent.allClosed();
      } finally {
        await silent.close();
      }
    });

    test('respondToAsync works without asyncreply() before it', async () => {
      const lone = await serveApp(kind, 'alone');
      try {
        const deferred = await request(`${lone.url}/reports/3`, { headers: DEFERRABLE });
        assert.equal(deferred.status, 202);
        assert.equal(deferred.headers.get('Asyncreply-Defer'), '1; timeout=3600; retention=604800; wait=2');
        await deferred.body?.cancel();

        const replay = await request(`${lone.url}/reports/3`, { headers: replayHeaders(progress.url, 'op-3') });
        assert.equal(replay.status, 200);
        assert.deepEqual(await replay.json(), { report: '3', replay: true, operation: 'op-3' });
        assert.equal(lone.ran.report, 1);
      } finally {
        await lone.close();
      }
    });
  });
}

test('a deferral is answered once the request body has arrived whole, for the gateway records it as it forwards it', async () => {
  let decided;
  const deciding = new Promise((resolve) => {
    decided = resolve;
  });
  const deferExport = respondToAsync({
    if: () => {
      decided();
      return true;
    },
  });
  let completeWhenAnswered;
  const app = await listen(
    createServer((req, res) => {
      const writeHead = res.writeHead;
      res.writeHead = function (...args) {
        completeWhenAnswered = req.complete;
        return writeHead.apply(this, args);
      };
      deferExport(req, res);
    }),
  );
  const socket = connect(app.server.address().port, '127.0.0.1');
  try {
    await once(socket, 'connect');
    let answer = '';
    socket.setEncoding('utf8').on('data', (chunk) => {
      answer += chunk;
    });
    const head = 'POST /exports HTTP/1.1\r\nHost: app\r\nAsyncreply-Deferrable: 1\r\nContent-Length: 10\r\nConnection: close\r\n\r\n';
    socket.write(`${head}hello`);
    await deciding; // the deferral is decided with half the body sent
    socket.end('world');
    await once(socket, 'end');
    assert.match(answer, /^HTTP\/1.1 202 Accepted\r\n/);
    assert.equal(completeWhenAnswered, true, 'answered before the body was whole');
  } finally {
    socket.destroy();
    await app.close();
  }
});

test('progress reports go out one at a time, in order, the latest replacing those waiting', async () => {
  const [app, progress] = await Promise.all([serveApp('node:http', { progressTimeout: 10_000 }), progressServer({ hold: true })]);
  try {
    const response = await request(`${app.url}/steps`, { method: 'POST', headers: replayHeaders(progress.url) });
    assert.deepEqual(await response.json(), { replay: true });

    await progress.received(1);
    assert.deepEqual(progress.reports[0].body, { percent: 10, message: 'one' });
    // While the first is unanswered, the other two wait; then only the
    // latest of them goes.
    progress.release();
    await progress.received(2);
    assert.deepEqual(
      progress.reports.map((report) => report.body),
      [
        { percent: 10, message: 'one' },
        { percent: 90, message: 'three' },
      ],
    );
  } finally {
    progress.release();
    await Promise.all([app.close(), progress.close()]);
  }
});

test('a report waiting behind an unanswered one holds the handler no longer than progressTimeout either', async () => {
  const progressTimeout = 1000;
  const [app, silent] = await Promise.all([serveApp('node:http', { progressTimeout }), silentListener()]);
  try {
    const response = await request(`${app.url}/queued`, { method: 'POST', headers: replayHeaders(silent.url) });
    const { progressMillis } = await response.json();
    // Delivered in turn, the second report would hold the handler until
    // the first one's own timeout and then its own: twice progressTimeout.
    assert.ok(progressMillis < progressTimeout * 1.5, `the report held the handler ${progressMillis} ms`);
  } finally {
    await Promise.all([app.close(), silent.close()]);
  }
});

test('inline mode never defers, and believes no Asyncreply-* header', async () => {
  const [app, progress] = await Promise.all([serveApp('Express 5', { mode: 'inline' }), progressServer()]);
  try {
    const first = await request(`${app.url}/reports/7`, { headers: DEFERRABLE });
    assert.equal(first.status, 200);
    assert.deepEqual(await first.json(), { report: '7', replay: false, operation: null });

    const posing = await request(`${app.url}/rebuild`, {
      method: 'POST',
      headers: { ...DEFERRABLE, ...replayHeaders(progress.url) },
      body: 'x',
    });
    assert.equal(posing.status, 201);
    const body = await posing.json();
    assert.equal(body.replay, false);
    assert.equal(body.operation, null);
    // The handler awaited its report: had it been sent, it would be here.
    assert.deepEqual(progress.reports, []);
  } finally {
    await Promise.all([app.close(), progress.close()]);
  }
});

test('deferring once the response has started throws', async () => {
  const app = await serveApp('node:http');
  try {
    const response = await request(`${app.url}/late`, { method: 'POST', headers: DEFERRABLE });
    assert.equal(response.status, 200);
    assert.equal(await response.text(), 'asyncreply: the response has started, too late to defer the request');
  } finally {
    await app.close();
  }
});

test('invalid options are refused when the middleware is made', () => {
  for (const options of [{ timeout: 0 }, { retention: 0 }, { wait: -1 }, { timeout: 1.5 }, { wait: '2' }, { timeout: 2 ** 53 }]) {
    assert.throws(() => respondToAsync(options), RangeError, JSON.stringify(options));
  }
  assert.throws(() => respondToAsync({ timout: 60 }), /unknown option timout/);
  assert.throws(() => respondToAsync({ if: true }), TypeError);
  assert.doesNotThrow(() => respondToAsync({ timeout: 1, retention: 1, wait: 0 }));

  assert.throws(() => asyncreply({ mode: 'async' }), /mode must be one of gateway, inline, test/);
  assert.throws(() => asyncreply({ mode: 'test' }), /takes a recorder/);
  assert.throws(() => asyncreply({ recorder: new Recorder() }), /takes a recorder/);
  assert.throws(() => asyncreply({ progressTimeout: 0 }), RangeError);
  assert.throws(() => asyncreply({ progres: 10 }), /unknown option progres/);
});
