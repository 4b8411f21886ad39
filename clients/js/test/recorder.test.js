// The test mode, as an application's own tests use it: deferrals recorded,
// then replayed through the application with the same cookies.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';

import express4 from 'express4';
import express5 from 'express';

import { asyncreply, Recorder, respondToAsync } from '../src/server.js';
import { listen, readText, request, sendJSON } from './apps.js';

function cookie(req, name) {
  const pair = (req.headers.cookie ?? '').split(/;\s*/).find((candidate) => candidate.startsWith(`${name}=`));
  return pair?.slice(name.length + 1) ?? null;
}

// An export that runs later, as the user who asked for it.
function exportsApp(express, recorder, ran) {
  const app = express();
  app.use(asyncreply({ mode: 'test', recorder }));
  app.use(express.json());
  app.post('/exports', respondToAsync({ timeout: 3600 }), async (req, res) => {
    ran.exports++;
    await req.asyncProgress(10, 'Collecting rows');
    req.asyncProgress(120, 'Done');
    res.cookie('exported', req.body.kind);
    res.status(201).json({
      user: cookie(req, 'session'),
      kind: req.body.kind,
      page: req.query.page,
      replay: req.asyncReplay,
      operation: req.asyncOperationId,
    });
  });
  app.get('/reports/:id', respondToAsync(), (req, res) => res.json({ report: req.params.id, user: cookie(req, 'session') }));
  return app;
}

for (const [kind, express] of Object.entries({ 'Express 5': express5, 'Express 4': express4 })) {
  test(`${kind}: a deferral is recorded, and replayed through the app with the same cookies`, async () => {
    const recorder = new Recorder();
    const ran = { exports: 0 };
    const app = exportsApp(express, recorder, ran);
    const served = await listen(createServer(app));
    try {
      const response = await request(`${served.url}/exports?page=2`, {
        method: 'POST',
        headers: { Cookie: 'session=alice', 'Content-Type': 'application/json', 'Asyncreply-Progress': 'http://elsewhere.test/' },
        body: JSON.stringify({ kind: 'csv' }),
      });
      assert.equal(response.status, 202);
      assert.equal(response.headers.get('Asyncreply-Defer'), '1; timeout=3600');
      assert.equal(ran.exports, 0);

      assert.equal(recorder.deferred.length, 1);
      const [deferred] = recorder.deferred;
      assert.equal(deferred.method, 'POST');
      assert.equal(deferred.url, '/exports?page=2');
      assert.equal(deferred.path, '/exports');
      assert.equal(deferred.headers.cookie, 'session=alice');
      assert.equal(deferred.headers['content-type'], 'application/json');
      assert.equal(deferred.headers['asyncreply-progress'], undefined, 'a client-sent Asyncreply-* header was recorded');
      assert.deepEqual(JSON.parse(deferred.body), { kind: 'csv' });
      assert.deepEqual([deferred.timeout, deferred.retention, deferred.wait], [3600, undefined, undefined]);

      const [replayed] = await recorder.performDeferred(app);
      assert.equal(replayed.status, 201);
      assert.deepEqual(await replayed.json(), {
        user: 'alice',
        kind: 'csv',
        page: '2',
        replay: true,
        operation: deferred.operationId,
      });
      assert.match(replayed.headers.get('Set-Cookie'), /^exported=csv;/);
      assert.equal(ran.exports, 1);
      assert.deepEqual(recorder.deferred, []);
      assert.deepEqual(recorder.performed, [deferred]);
      assert.equal(deferred.response, replayed);
      assert.deepEqual(deferred.progress, [
        { percent: 10, message: 'Collecting rows' },
        { percent: 100, message: 'Done' },
      ]);
    } finally {
      await served.close();
    }
  });
}

test('performDeferred replays the requests filter accepts, to a running server too', async () => {
  const recorder = new Recorder();
  const app = exportsApp(express5, recorder, { exports: 0 });
  const served = await listen(createServer(app));
  try {
    for (const user of ['alice', 'bob']) {
      const response = await request(`${served.url}/reports/${user}-1`, { headers: { Cookie: `session=${user}` } });
      assert.equal(response.status, 202);
    }
    assert.deepEqual(
      recorder.deferred.map((deferred) => deferred.path),
      ['/reports/alice-1', '/reports/bob-1'],
    );

    const responses = await recorder.performDeferred(served.url, (deferred) => deferred.path === '/reports/bob-1');
    assert.equal(responses.length, 1);
    assert.deepEqual(await responses[0].json(), { report: 'bob-1', user: 'bob' });
    assert.deepEqual(
      recorder.deferred.map((deferred) => deferred.path),
      ['/reports/alice-1'],
    );
    assert.deepEqual(
      recorder.performed.map((deferred) => deferred.path),
      ['/reports/bob-1'],
    );

    recorder.clear();
    assert.deepEqual([recorder.deferred, recorder.performed], [[], []]);
  } finally {
    await served.close();
  }
});

test('a body nothing read before the deferral is recorded byte for byte, and replayed', async () => {
  const recorder = new Recorder();
  const decorate = asyncreply({ mode: 'test', recorder });
  const deferUpload = respondToAsync();
  let replayedBody;
  const handler = async (req, res) => {
    decorate(req, res);
    if (deferUpload(req, res)) {
      return;
    }
    replayedBody = await readText(req);
    sendJSON(res, 200, { replay: req.asyncReplay, length: req.headers['content-length'] });
  };
  const served = await listen(createServer(handler));
  const body = 'a=1&b=%C3%A9\r\nnot really a form';
  try {
    const response = await request(`${served.url}/uploads`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body,
    });
    assert.equal(response.status, 202);
    assert.equal(recorder.deferred[0].body.toString(), body);

    const [replayed] = await recorder.performDeferred(handler);
    assert.deepEqual(await replayed.json(), { replay: true, length: String(Buffer.byteLength(body)) });
    assert.equal(replayedBody, body);
  } finally {
    await served.close();
  }
});

test('a body a parser read is recorded from what it kept, and refused when it kept nothing usable', async () => {
  const recorder = new Recorder();
  const app = express5();
  app.set('env', 'test'); // the error in the 500's body, not on the console
  app.use(asyncreply({ mode: 'test', recorder }));
  const rawBody = (req, res, buf) => {
    req.rawBody = buf;
  };
  app.post('/kept', express5.urlencoded({ extended: false, verify: rawBody }), respondToAsync(), (req, res) => res.json(req.body));
  app.post('/lost', express5.urlencoded({ extended: false }), respondToAsync(), (req, res) => res.json(req.body));
  const served = await listen(createServer(app));
  const form = { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'kind=csv&kind=pdf' };
  try {
    const kept = await request(`${served.url}/kept`, form);
    assert.equal(kept.status, 202);
    assert.equal(recorder.deferred[0].body.toString(), 'kind=csv&kind=pdf');
    const [replayed] = await recorder.performDeferred(app);
    assert.deepEqual(await replayed.json(), { kind: ['csv', 'pdf'] });

    const lost = await request(`${served.url}/lost`, form);
    assert.equal(lost.status, 500);
    assert.match(await lost.text(), /the request body was read before the deferral/);
    assert.deepEqual(recorder.deferred, []);
  } finally {
    await served.close();
  }
});

test('a second deferral of the same request throws, and the first one stands', async () => {
  const recorder = new Recorder();
  const decorate = asyncreply({ mode: 'test', recorder });
  let second;
  const served = await listen(
    createServer((req, res) => {
      decorate(req, res);
      res.deferAsync({ timeout: 60 });
      try {
        res.deferAsync({ timeout: 120 });
      } catch (err) {
        second = err.message;
      }
    }),
  );
  try {
    const response = await request(`${served.url}/twice`, { method: 'POST', body: 'x' });
    assert.equal(response.status, 202);
    assert.equal(response.headers.get('Asyncreply-Defer'), '1; timeout=60');
    assert.equal(second, 'asyncreply: the response has started, too late to defer the request');
    assert.deepEqual(
      recorder.deferred.map((deferred) => deferred.timeout),
      [60],
    );
  } finally {
    await served.close();
  }
});
