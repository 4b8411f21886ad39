// The servers the tests of asyncreply/server run against: one application
// written for Express 5, Express 4 and plain node:http, a progress server
// standing in for the gateway's, and a listener that never answers.

import { once } from 'node:events';
import { createServer } from 'node:http';
import { createServer as createTCPServer } from 'node:net';
import { setImmediate } from 'node:timers/promises';

import express4 from 'express4';
import express5 from 'express';

import { asyncreply, respondToAsync } from '../src/server.js';

// How long a test waits for something that should happen at once.
const DEADLINE = 10_000;

const REPORT_DEFERRAL = { timeout: 3600, retention: 604800, wait: 2 };

/**
 * The application's handlers, in node:http terms so that every framework
 * runs the same ones; `ran` counts what they did.
 */
function handlers(ran) {
  return {
    // GET /reports/:id, deferred by respondToAsync(REPORT_DEFERRAL).
    report(req, res, id) {
      ran.report++;
      sendJSON(res, 200, { report: id, replay: req.asyncReplay, operation: req.asyncOperationId ?? null });
    },
    // GET /exports?format=…, deferred by respondToAsync when format=pdf.
    export(req, res) {
      ran.export++;
      sendJSON(res, 200, { format: query(req).get('format'), replay: req.asyncReplay });
    },
    // POST /rebuild decides inside the handler, then reports progress.
    async rebuild(req, res) {
      ran.rebuild++;
      if (res.deferAsync({ wait: 0 })) {
        return;
      }
      ran.rebuildWork++;
      const body = await readText(req);
      const started = performance.now();
      await req.asyncProgress(40, 'halfway');
      const progressMillis = performance.now() - started;
      sendJSON(res, 201, {
        replay: req.asyncReplay,
        operation: req.asyncOperationId ?? null,
        cookie: req.headers.cookie ?? null,
        body,
        progressMillis,
      });
    },
    // POST /steps reports three steps, each in a later turn of the event
    // loop than the one before, without waiting for any to be delivered.
    async steps(req, res) {
      req.asyncProgress(10, 'one');
      await setImmediate();
      req.asyncProgress(50, 'two');
      await setImmediate();
      req.asyncProgress(90, 'three');
      sendJSON(res, 200, { replay: req.asyncReplay });
    },
    // POST /queued awaits a report made while another is unanswered.
    async queued(req, res) {
      req.asyncProgress(10, 'first');
      await setImmediate();
      const started = performance.now();
      await req.asyncProgress(50, 'second');
      sendJSON(res, 200, { progressMillis: performance.now() - started });
    },
    // POST /late starts its response, then asks to defer.
    late(req, res) {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      try {
        res.deferAsync();
        res.end('deferred');
      } catch (err) {
        res.end(err.message);
      }
    },
  };
}

function counters() {
  return { report: 0, export: 0, exportCondition: 0, rebuild: 0, rebuildWork: 0 };
}

function exportCondition(ran) {
  return (req) => {
    ran.exportCondition++;
    return query(req).get('format') === 'pdf';
  };
}

function expressApp(express, options, ran) {
  const handle = handlers(ran);
  const app = express();
  app.use(asyncreply(options));
  app.get('/reports/:id', respondToAsync(REPORT_DEFERRAL), (req, res) => handle.report(req, res, req.params.id));
  app.get('/exports', respondToAsync({ if: exportCondition(ran) }), (req, res) => handle.export(req, res));
  app.post('/rebuild', (req, res) => handle.rebuild(req, res));
  app.post('/steps', (req, res) => handle.steps(req, res));
  app.post('/queued', (req, res) => handle.queued(req, res));
  app.post('/late', (req, res) => handle.late(req, res));
  return app;
}

function httpApp(options, ran) {
  const handle = handlers(ran);
  const decorate = asyncreply(options);
  const deferReport = respondToAsync(REPORT_DEFERRAL);
  const deferExport = respondToAsync({ if: exportCondition(ran) });
  return (req, res) => {
    decorate(req, res);
    const { pathname } = new URL(req.url, 'http://app');
    const report = /^\/reports\/([^/]+)$/.exec(pathname);
    if (req.method === 'GET' && report) {
      if (!deferReport(req, res)) {
        handle.report(req, res, report[1]);
      }
    } else if (req.method === 'GET' && pathname === '/exports') {
      deferExport(req, res, () => handle.export(req, res));
    } else if (req.method === 'POST' && pathname === '/rebuild') {
      handle.rebuild(req, res);
    } else if (req.method === 'POST' && pathname === '/steps') {
      handle.steps(req, res);
    } else if (req.method === 'POST' && pathname === '/queued') {
      handle.queued(req, res);
    } else if (req.method === 'POST' && pathname === '/late') {
      handle.late(req, res);
    } else {
      sendJSON(res, 404, { error: 'not found' });
    }
  };
}

// The same application with respondToAsync alone, no asyncreply() before it.
function alone(kind, ran) {
  const handle = handlers(ran);
  const deferReport = respondToAsync(REPORT_DEFERRAL);
  if (kind === 'node:http') {
    return (req, res) => {
      if (!deferReport(req, res)) {
        handle.report(req, res, req.url.split('/')[2]);
      }
    };
  }
  const app = (kind === 'Express 4' ? express4 : express5)();
  app.get('/reports/:id', deferReport, (req, res) => handle.report(req, res, req.params.id));
  return app;
}

/** The application on each framework, by name, given asyncreply()'s options. */
export const APPS = {
  'Express 5': (options, ran) => expressApp(express5, options, ran),
  'Express 4': (options, ran) => expressApp(express4, options, ran),
  'node:http': (options, ran) => httpApp(options, ran),
};

/**
 * Serves an application on a port of its own.
 *
 * @param {string} kind a key of APPS
 * @param {object | 'alone'} options asyncreply()'s, or 'alone' for
 *   respondToAsync without asyncreply()
 */
export async function serveApp(kind, options = {}) {
  const ran = counters();
  const app = options === 'alone' ? alone(kind, ran) : APPS[kind](options, ran);
  const served = await listen(createServer(app));
  return { ...served, ran };
}

/** Starts server on a loopback port of its own. */
export async function listen(server) {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    server,
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => closeServer(server),
  };
}

function closeServer(server) {
  const closed = once(server, 'close');
  server.close();
  server.closeAllConnections();
  return closed;
}

/**
 * A progress server standing in for the gateway's: it records every
 * report. With hold, it answers none until release().
 */
export async function progressServer({ hold = false } = {}) {
  const reports = [];
  const held = [];
  const arrived = new EventTarget();
  let holding = hold;
  const served = await listen(
    createServer(async (req, res) => {
      const text = await readText(req);
      reports.push({ method: req.method, path: req.url, contentType: req.headers['content-type'], body: JSON.parse(text) });
      if (holding) {
        held.push(res);
      } else {
        res.writeHead(204).end();
      }
      arrived.dispatchEvent(new Event('report'));
    }),
  );
  return {
    url: `${served.url}/operations/op-1/progress`,
    reports,
    /** Resolves once count reports have arrived. */
    received(count) {
      const describe = () => `${reports.length} of ${count} progress reports arrived: ${JSON.stringify(reports)}`;
      return until(arrived, 'report', () => reports.length >= count, describe);
    },
    /** Answers the reports held so far, and those to come. */
    release() {
      holding = false;
      for (const res of held.splice(0)) {
        res.writeHead(204).end();
      }
    },
    close: served.close,
  };
}

/** A TCP listener that accepts connections and never answers. */
export async function silentListener() {
  const sockets = new Set();
  const changed = new EventTarget();
  let connections = 0;
  const server = createTCPServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.resume(); // read, so as to see the other side close
    socket.on('close', () => {
      sockets.delete(socket);
      changed.dispatchEvent(new Event('close'));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${server.address().port}/operations/op-1/progress`,
    get connections() {
      return connections;
    },
    /** Resolves once every connection it accepted is closed by the other side. */
    allClosed() {
      return until(changed, 'close', () => sockets.size === 0, () => `${sockets.size} connections still open`);
    },
    close() {
      for (const socket of sockets) {
        socket.destroy();
      }
      const closed = once(server, 'close');
      server.close();
      return closed;
    },
  };
}

// until resolves when done() holds, checked at each event of target; it
// rejects with describe() past the deadline.
function until(target, type, done, describe) {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (done()) {
        finish();
        resolve();
      }
    };
    const timer = setTimeout(() => {
      finish();
      reject(new Error(describe()));
    }, DEADLINE);
    const finish = () => {
      clearTimeout(timer);
      target.removeEventListener(type, check);
    };
    target.addEventListener(type, check);
    check();
  });
}

/** fetch, failing the test rather than hanging when the server never answers. */
export function request(url, init = {}) {
  return fetch(url, { signal: AbortSignal.timeout(DEADLINE), ...init });
}

export function sendJSON(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

export async function readText(req) {
  let text = '';
  for await (const chunk of req.setEncoding('utf8')) {
    text += chunk;
  }
  return text;
}

function query(req) {
  return new URL(req.originalUrl ?? req.url, 'http://app').searchParams;
}
