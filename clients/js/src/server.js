// asyncreply/server: the application's side of the gateway's handshake, for
// Node servers — Express 4 and 5, or plain node:http handlers. The
// application decides, per request, what becomes asynchronous: it answers
// 202 with Asyncreply-Defer instead of doing the work, the gateway creates
// the operation and answers the client, and later replays the same request
// (cookies included) with Asyncreply-Operation, when the handler runs for
// real and may report progress to the URL in Asyncreply-Progress.

import { randomUUID } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

/**
 * The longest a progress report may hold the handler that awaits it, in
 * milliseconds.
 */
export const DEFAULT_PROGRESS_TIMEOUT = 1000;

// The handshake's headers, as Node names them on a request (lowercase).
const DEFERRABLE_HEADER = 'asyncreply-deferrable';
const OPERATION_HEADER = 'asyncreply-operation';
const PROGRESS_HEADER = 'asyncreply-progress';
const DEFER_HEADER = 'Asyncreply-Defer';

// The least value each of a deferral's parameters may take: a replay must
// be allowed to run and its response to be kept, but a client may be made
// not to wait at all.
const DEFERRAL_MINIMUMS = { timeout: 1, retention: 1, wait: 0 };

const MODES = ['gateway', 'inline', 'test'];

// Where a request's settings are kept once asyncreply() decorated it, so
// that respondToAsync follows the mode chosen for the whole application.
const SETTINGS = Symbol('asyncreply settings');
// Marks a response whose deferral is on its way: the test mode sends it
// only once the request's body is recorded.
const DEFERRED = Symbol('asyncreply deferred');

/**
 * The application-level middleware: gives every request
 * `req.asyncReplay`, `req.asyncOperationId` and `req.asyncProgress()`, and
 * every response `res.deferAsync()`, in the chosen mode. `next` is optional,
 * so that a plain node:http handler can call it first and go on.
 *
 * @param {import('../server.js').AsyncreplyOptions} [options]
 */
export function asyncreply(options = {}) {
  const settings = settingsFrom(options);
  return function decorateAsync(req, res, next) {
    decorate(req, res, settings);
    next?.();
  };
}

/**
 * A middleware that defers every request it sees, unless `if` says
 * otherwise: mount it on the routes to make asynchronous. It calls `next`
 * when the request goes on (during the replay, without a gateway in front,
 * in inline mode) and returns whether it deferred, for plain node:http
 * handlers that call it without `next`.
 *
 * @param {import('../server.js').RespondToAsyncOptions} [options]
 */
export function respondToAsync(options = {}) {
  const { if: condition, ...parameters } = options;
  if (condition !== undefined && typeof condition !== 'function') {
    throw new TypeError(`respondToAsync: if must be a function of the request, not ${typeof condition}`);
  }
  const deferral = deferralFrom(parameters, 'respondToAsync', 'if, timeout, retention or wait');
  return function deferAsyncRequest(req, res, next) {
    const settings = req[SETTINGS] ?? decorate(req, res, DEFAULT_SETTINGS);
    // The condition is asked only of requests that could be deferred, so
    // that it never runs on the replay.
    const deferring = canDefer(req, settings) && (condition === undefined || condition(req));
    if (deferring && deferWith(req, res, settings, deferral)) {
      return true;
    }
    next?.();
    return false;
  };
}

/**
 * The test mode's record of deferrals: each deferred request as the gateway
 * would have recorded it, until performDeferred replays it through the
 * application.
 */
export class Recorder {
  /** @type {DeferredRequest[]} the deferred requests not replayed yet, oldest first */
  deferred = [];
  /** @type {DeferredRequest[]} the replayed ones, with their responses and progress */
  performed = [];

  /**
   * Replays the deferred requests that `filter` accepts (all by default),
   * one after the other, as the gateway would: same method, URL, headers,
   * cookies and body, with Asyncreply-Operation and Asyncreply-Progress.
   *
   * @param {((req: object, res: object) => void) | string | URL} app a
   *   request listener (an Express app, a node:http handler), run on a
   *   server of its own for the replays, or the URL of a running server
   * @param {(deferred: DeferredRequest) => boolean} [filter]
   * @returns {Promise<Response[]>} the replays' responses, bodies read
   */
  async performDeferred(app, filter = () => true) {
    const chosen = this.deferred.filter(filter);
    this.deferred = this.deferred.filter((deferred) => !chosen.includes(deferred));
    const target = await replayTarget(app);
    try {
      const responses = [];
      for (const deferred of chosen) {
        this.performed.push(deferred);
        deferred.response = await replay(target.origin, deferred);
        responses.push(deferred.response);
      }
      return responses;
    } finally {
      await target.close();
    }
  }

  /** Forgets every deferred and performed request. */
  clear() {
    this.deferred = [];
    this.performed = [];
  }
}

// A request the test mode deferred, recorded as the gateway records it.
class DeferredRequest {
  constructor(req, deferral, body) {
    this.operationId = randomUUID();
    this.method = req.method;
    this.url = req.originalUrl ?? req.url; // Express rewrites req.url in routers
    this.path = this.url.replace(/[?#].*$/s, '');
    this.headers = recordedHeaders(req);
    this.body = body;
    this.timeout = deferral.timeout;
    this.retention = deferral.retention;
    this.wait = deferral.wait;
    /** @type {Response | undefined} */
    this.response = undefined;
    /** @type {{percent: number, message?: string}[]} */
    this.progress = [];
  }

  // The test mode records the replay's progress itself: nothing listens
  // here, and the .test domain is never a real host.
  get progressURL() {
    return `http://asyncreply.test/operations/${this.operationId}/progress`;
  }
}

function settingsFrom(options) {
  const { mode = 'gateway', recorder, progressTimeout = DEFAULT_PROGRESS_TIMEOUT, ...unknown } = options;
  rejectUnknown(unknown, 'asyncreply', 'mode, recorder or progressTimeout');
  if (!MODES.includes(mode)) {
    throw new TypeError(`asyncreply: mode must be one of ${MODES.join(', ')}, not ${JSON.stringify(mode)}`);
  }
  if ((mode === 'test') !== (recorder instanceof Recorder)) {
    throw new TypeError("asyncreply: mode 'test' takes a recorder (new Recorder()), and only it does");
  }
  if (typeof progressTimeout !== 'number' || !(progressTimeout > 0) || !Number.isFinite(progressTimeout)) {
    throw new RangeError(`asyncreply: progressTimeout must be a positive number of milliseconds, not ${progressTimeout}`);
  }
  return { mode, recorder, progressTimeout };
}

const DEFAULT_SETTINGS = settingsFrom({});

// deferralFrom checks a deferral's parameters and keeps those given: the
// others are the gateway's settings for the route.
function deferralFrom(parameters, caller, known = 'timeout, retention or wait') {
  const { timeout, retention, wait, ...unknown } = parameters ?? {};
  rejectUnknown(unknown, caller, known);
  const deferral = {};
  for (const [name, value] of Object.entries({ timeout, retention, wait })) {
    if (value === undefined) {
      continue;
    }
    const minimum = DEFERRAL_MINIMUMS[name];
    if (!Number.isSafeInteger(value) || value < minimum) {
      throw new RangeError(`${caller}: ${name} must be a whole number of seconds, at least ${minimum}, not ${value}`);
    }
    deferral[name] = value;
  }
  return deferral;
}

function rejectUnknown(unknown, caller, known) {
  const names = Object.keys(unknown);
  if (names.length > 0) {
    throw new TypeError(`${caller}: unknown option ${names.join(', ')}: use ${known}`);
  }
}

function decorate(req, res, settings) {
  // Inline mode replays nothing, so it believes no header that says so.
  const operationId = settings.mode === 'inline' ? undefined : headerValue(req, OPERATION_HEADER);
  req[SETTINGS] = settings;
  req.asyncOperationId = operationId;
  req.asyncReplay = operationId !== undefined;
  req.asyncProgress = progressReporter(req, settings);
  res.deferAsync = (options) => deferWith(req, res, settings, deferralFrom(options, 'deferAsync'));
  return settings;
}

function headerValue(req, name) {
  const value = req.headers[name];
  return typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined;
}

// canDefer tells whether a deferral of this request would be sent: never on
// the replay, and in gateway mode only when a gateway forwarded it as a
// first arrival, so that without one the handler simply runs. The test mode
// stands in for the gateway.
function canDefer(req, settings) {
  if (req.asyncReplay) {
    return false;
  }
  switch (settings.mode) {
    case 'gateway':
      return headerValue(req, DEFERRABLE_HEADER) === '1';
    case 'test':
      return true;
    default:
      return false;
  }
}

// deferWith answers the request with the deferral when it can be deferred,
// and returns whether it did.
function deferWith(req, res, settings, deferral) {
  if (!canDefer(req, settings)) {
    return false;
  }
  if (res.headersSent || res[DEFERRED]) {
    throw new Error('asyncreply: the response has started, too late to defer the request');
  }
  res[DEFERRED] = true;
  if (settings.mode === 'test') {
    recordDeferral(settings.recorder, req, deferral).then(
      () => sendDeferral(req, res, deferral),
      (err) => res.destroy(err),
    );
  } else {
    sendDeferral(req, res, deferral);
  }
  return true;
}

// sendDeferral answers as the gateway expects, once the request's body has
// arrived whole (read and dropped: the replay brings it again). The
// gateway records the body as it forwards it, so an answer before the end
// could cut the recorded request short. The gateway shows nothing of this
// answer to the client, so it carries no body.
function sendDeferral(req, res, deferral) {
  const parameters = Object.entries(deferral).map(([name, value]) => `${name}=${value}`);
  const answer = () => {
    res.writeHead(202, { [DEFER_HEADER]: ['1', ...parameters].join('; '), 'Content-Length': '0' });
    res.end();
  };
  if (req.readableEnded) {
    answer();
  } else {
    req.once('end', answer);
    req.resume();
  }
}

// progressReporter is req.asyncProgress: during the replay it POSTs each
// report to the gateway, one at a time and in order, a report still waiting
// its turn replaced by a newer one, since only the latest matters to the
// client. The promise it returns never rejects and settles within
// progressTimeout, so a handler may await it or not.
function progressReporter(req, settings) {
  if (settings.mode === 'test' && req.asyncReplay) {
    return (percent, message) => {
      const report = progressReport(percent, message);
      const replayed = settings.recorder.performed.find((deferred) => deferred.operationId === req.asyncOperationId);
      if (report && replayed) {
        replayed.progress.push(report);
      }
      return Promise.resolve();
    };
  }
  const url = req.asyncReplay ? progressURL(req) : undefined;
  if (url === undefined) {
    return () => Promise.resolve();
  }
  let sending = Promise.resolve();
  let waiting;
  return (percent, message) => {
    const report = progressReport(percent, message);
    if (!report) {
      return Promise.resolve();
    }
    waiting = JSON.stringify(report);
    sending = sending.then(() => {
      const body = waiting;
      waiting = undefined;
      return body === undefined ? undefined : postProgress(url, body, settings.progressTimeout);
    });
    return settleWithin(sending, settings.progressTimeout);
  };
}

// progressReport is the body of a report: percent rounded into 0–100;
// nothing when percent is not a number, since progress must never throw.
function progressReport(percent, message) {
  if (typeof percent !== 'number' || !Number.isFinite(percent)) {
    return undefined;
  }
  const report = { percent: Math.min(100, Math.max(0, Math.round(percent))) };
  if (message !== undefined && message !== null) {
    report.message = String(message);
  }
  return report;
}

function progressURL(req) {
  const value = headerValue(req, PROGRESS_HEADER);
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : undefined;
  } catch {
    return undefined;
  }
}

// postProgress never rejects: progress is advisory (the gateway answers 410
// once the attempt is over), and the replay goes on without it. Past
// timeout the report is abandoned and its connection closed, so that a
// gateway that never answers holds no socket of ours.
function postProgress(url, body, timeout) {
  return new Promise((resolve) => {
    const request = requestFor(url)(
      url,
      { method: 'POST', headers: { 'Content-Type': 'application/json' }, signal: AbortSignal.timeout(timeout) },
      (response) => {
        response.on('error', () => {}); // reported on the request too
        response.resume(); // the answer has nothing for us
      },
    );
    request.on('error', () => {}); // dropped: the next report tells the client more
    request.on('close', resolve);
    request.end(body);
  });
}

function requestFor(url) {
  return new URL(url).protocol === 'https:' ? httpsRequest : httpRequest;
}

function settleWithin(promise, millis) {
  let timer;
  const timedOut = new Promise((resolve) => {
    timer = setTimeout(resolve, millis);
  });
  return Promise.race([promise, timedOut]).finally(() => clearTimeout(timer));
}

// Headers of the request that describe its connection, not the request:
// the replay has a connection of its own, and a Content-Length of its own
// once the body is known. Asyncreply-* headers are stripped by the gateway
// from everything it receives, so they are not recorded either.
const NOT_RECORDED = new Set([
  'connection',
  'content-length',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

function recordedHeaders(req) {
  const headers = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (!name.startsWith('asyncreply-') && !NOT_RECORDED.has(name)) {
      headers[name] = value;
    }
  }
  return headers;
}

// recordDeferral records the request once its body is known. It throws at
// once when the body cannot be recorded, so the handler's error reaches the
// test that made the request.
function recordDeferral(recorder, req, deferral) {
  return Promise.resolve(recordedBody(req)).then((body) => {
    recorder.deferred.push(new DeferredRequest(req, deferral, body));
  });
}

// recordedBody is the request's body as the gateway would have recorded
// it. A deferral usually comes before anything read the body, and then it
// is read here; when a body parser got there first, what it kept stands in.
function recordedBody(req) {
  if (!req.readableDidRead) {
    return readBody(req);
  }
  const kept = req.rawBody ?? req.body;
  if (typeof kept === 'string' || Buffer.isBuffer(kept)) {
    return Buffer.from(kept);
  }
  if (kept !== undefined && /[/+]json\b/i.test(req.headers['content-type'] ?? '')) {
    return Buffer.from(JSON.stringify(kept));
  }
  throw new Error(
    'asyncreply: the request body was read before the deferral and cannot be recorded: ' +
      'defer before the body parser, or have it keep the raw body in req.rawBody ' +
      "(Express's parsers take verify: (req, res, buf) => { req.rawBody = buf })",
  );
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

// replayTarget is the origin the replays are sent to: a server of its own
// for a request listener, closed afterwards.
async function replayTarget(app) {
  if (typeof app !== 'function') {
    return { origin: new URL(app).origin, close: async () => {} };
  }
  const server = createServer(app);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  };
}

// replay sends the recorded request with the replay's headers and returns
// the response, its body read, as a fetch Response.
function replay(origin, deferred) {
  const headers = {
    ...deferred.headers,
    [OPERATION_HEADER]: deferred.operationId,
    [PROGRESS_HEADER]: deferred.progressURL,
  };
  // The path goes as it was received, not resolved against the origin; the
  // body goes whole to end(), so node:http sets its Content-Length.
  const options = { method: deferred.method, path: deferred.url, headers, agent: false };
  return new Promise((resolve, reject) => {
    const request = requestFor(origin)(origin, options, (message) => {
      const chunks = [];
      message.on('data', (chunk) => chunks.push(chunk));
      message.on('error', reject);
      message.on('end', () => resolve(responseOf(deferred.method, message, Buffer.concat(chunks))));
    });
    request.on('error', reject);
    request.end(deferred.body);
  });
}

// Statuses whose Response may not have a body.
const NULL_BODY_STATUSES = [204, 205, 304];

function responseOf(method, message, body) {
  const headers = new Headers();
  for (let i = 0; i < message.rawHeaders.length; i += 2) {
    headers.append(message.rawHeaders[i], message.rawHeaders[i + 1]);
  }
  const noBody = method === 'HEAD' || NULL_BODY_STATUSES.includes(message.statusCode);
  return new Response(noBody ? null : body, { status: message.statusCode, statusText: message.statusMessage, headers });
}
