// asyncreply: fetch() for asynchronous HTTP endpoints. A request answered
// 202 Accepted with a monitor URL is followed — by server-sent events when
// the server offers them, by polling otherwise — until the operation is done,
// and the caller gets the response a synchronous request would have had.

import { parseEventStream } from './sse.js';

export { FeedError, watchOperations } from './feed.js';

/** The floor of the time between two polls, in milliseconds. */
export const DEFAULT_POLL_INTERVAL = 1000;

// How many times in a row an event stream may fail before polling takes over.
const MAX_STREAM_FAILURES = 3;

// Headers of the original request that describe its body or ask for
// asynchrony: they do not belong on polls, event streams and DELETE.
// Everything else — Authorization, custom credentials — is sent again, since
// the server decides who may see an operation from the same credentials.
const NOT_FOLLOWED = new Set([
  'accept',
  'content-encoding',
  'content-language',
  'content-length',
  'content-type',
  'idempotency-key',
  'last-event-id',
  'prefer',
]);

/**
 * Like fetch(), but follows an asynchronous operation to its end.
 *
 * @param {RequestInfo | URL} input as for fetch()
 * @param {RequestInit} [init] as for fetch()
 * @param {import('../index.js').AsyncFetchOptions} [options]
 * @returns {Promise<Response>} the final response
 */
export async function asyncFetch(input, init, options = {}) {
  const { onProgress, pollInterval = DEFAULT_POLL_INTERVAL, events = true } = options;
  const signal = options.signal ?? init?.signal ?? undefined;
  signal?.throwIfAborted();

  const request = new Request(input, signal ? { ...init, signal } : init);
  const first = await fetch(request);
  if (first.status !== 202) {
    return first;
  }
  const base = first.url || request.url;
  let location = first.headers.get('Location');
  let doc;
  if (!location) {
    // Not our protocol unless the status document names the monitor URL;
    // otherwise the 202 is the answer, and its body must stay unread.
    if (isJSON(first)) {
      doc = await readStatus(first.clone(), signal);
      location = doc?.links?.self;
    }
    if (!location) {
      return first;
    }
    discard(first);
  }
  const monitor = new URL(location, base).href;
  const follow = followInit(request, signal);
  const progress = progressReporter(onProgress);

  try {
    doc ??= await readStatus(first, signal);
    progress.report(doc);
    let firstPoll = retryDelay(first, pollInterval);
    const eventsURL = events && !doc?.done && doc?.links?.events;
    if (eventsURL) {
      const url = new URL(eventsURL, monitor).href;
      if (canUseEventSource(follow)) {
        await watchEventSource(url, request.credentials === 'include', progress, signal);
      } else {
        await watchEventStream(url, follow, progress, signal);
      }
      firstPoll = 0; // done, or the stream is unusable: ask now
    }
    return await poll(monitor, follow, firstPoll, pollInterval, progress, signal);
  } catch (err) {
    if (signal?.aborted) {
      await cancelOperation(monitor, follow);
      throw signal.reason;
    }
    throw err;
  }
}

// followInit is the RequestInit of every request about the operation.
function followInit(request, signal) {
  const headers = new Headers();
  for (const [name, value] of request.headers) {
    if (!NOT_FOLLOWED.has(name)) {
      headers.append(name, value);
    }
  }
  headers.set('Accept', 'application/json');
  const init = { headers, credentials: request.credentials };
  if (signal) {
    init.signal = signal;
  }
  return init;
}

// EventSource can send neither headers nor a signal; it is used (where it
// exists, in browsers) only when the request has no headers that the
// server might need to recognise the caller: cookies it does send.
function canUseEventSource(follow) {
  if (typeof globalThis.EventSource !== 'function') {
    return false;
  }
  for (const name of follow.headers.keys()) {
    if (name !== 'accept') {
      return false;
    }
  }
  return true;
}

function progressReporter(onProgress) {
  let last;
  return {
    /** Calls onProgress when a status document differs from the last one. */
    report(doc) {
      if (!doc || typeof doc.status !== 'string') {
        return;
      }
      const next = {
        percent: Number(doc.progress?.percent ?? 0),
        message: String(doc.progress?.message ?? ''),
        status: doc.status,
      };
      if (last && last.percent === next.percent && last.message === next.message && last.status === next.status) {
        return;
      }
      last = next;
      onProgress?.({ ...next });
    },
    /** Reports success when a poll was redirected to the response. */
    succeeded() {
      this.report({ status: 'Succeeded', progress: { percent: 100, message: last?.message ?? '' } });
    },
  };
}

// poll asks the monitor URL until it stops answering 202: fetch follows its
// 303 to the stored response; a failure comes with its own status.
async function poll(monitor, follow, delay, pollInterval, progress, signal) {
  for (;;) {
    if (delay > 0) {
      await sleep(delay, signal);
    }
    let response = await fetch(monitor, follow);
    if (response.status === 202 && !response.redirected) {
      progress.report(await readStatus(response, signal));
      delay = retryDelay(response, pollInterval);
      continue;
    }
    const location = response.headers.get('Location');
    if (response.status === 303 && location) {
      // Where redirects are not followed for us.
      discard(response);
      response = await fetch(new URL(location, monitor).href, follow);
      progress.succeeded();
    } else if (response.redirected) {
      progress.succeeded();
    }
    return response;
  }
}

// watchEventStream reads the operation's events over fetch until the
// terminal one, reconnecting as EventSource would. It returns early, leaving
// the rest to polling, when the server does not stream or the stream keeps
// failing.
async function watchEventStream(url, follow, progress, signal) {
  const state = { lastEventId: '', retry: DEFAULT_POLL_INTERVAL };
  for (let failures = 0; failures < MAX_STREAM_FAILURES; ) {
    const headers = new Headers(follow.headers);
    headers.set('Accept', 'text/event-stream');
    if (state.lastEventId) {
      headers.set('Last-Event-ID', state.lastEventId);
    }
    let response;
    try {
      response = await fetch(url, { ...follow, headers });
    } catch (err) {
      if (signal?.aborted) {
        throw err;
      }
      failures++;
      await sleep(state.retry, signal);
      continue;
    }
    if (response.status === 204) {
      return; // the server has nothing after the last event it sent
    }
    if (response.status !== 200 || !/^text\/event-stream\b/i.test(response.headers.get('Content-Type') ?? '')) {
      discard(response);
      return;
    }
    const stream = parseEventStream(response.body, state);
    try {
      for (;;) {
        let next;
        try {
          next = await stream.next();
        } catch (err) {
          if (signal?.aborted) {
            throw err;
          }
          break; // the connection broke
        }
        if (next.done) {
          break;
        }
        if (next.value.type !== 'status') {
          continue;
        }
        failures = 0;
        const doc = parseJSON(next.value.data);
        progress.report(doc);
        if (doc?.done) {
          return;
        }
      }
    } finally {
      await stream.return();
    }
    failures++; // the stream ended or broke before the terminal event
    await sleep(state.retry, signal);
  }
}

// watchEventSource is watchEventStream with the browser's EventSource.
function watchEventSource(url, withCredentials, progress, signal) {
  return new Promise((resolve, reject) => {
    const source = new EventSource(url, { withCredentials });
    let failures = 0;
    const finish = (err) => {
      source.close();
      signal?.removeEventListener('abort', onAbort);
      if (err === undefined) {
        resolve();
      } else {
        reject(err);
      }
    };
    const onAbort = () => finish(signal.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    source.addEventListener('status', (event) => {
      failures = 0;
      const doc = parseJSON(event.data);
      try {
        progress.report(doc);
      } catch (err) {
        finish(err);
        return;
      }
      if (doc?.done) {
        finish();
      }
    });
    source.addEventListener('error', () => {
      // EventSource reconnects by itself, except after a failed connection
      // (404, 503, not an event stream).
      if (source.readyState === EventSource.CLOSED || ++failures >= MAX_STREAM_FAILURES) {
        finish();
      }
    });
  });
}

// cancelOperation asks the server to cancel and forget the operation. It
// does not throw: the caller is already failing with the abort's reason.
async function cancelOperation(monitor, follow) {
  try {
    const response = await fetch(monitor, {
      method: 'DELETE',
      headers: follow.headers,
      credentials: follow.credentials,
      keepalive: true,
    });
    discard(response);
  } catch {
    // The operation expires on its own.
  }
}

function isJSON(response) {
  return /\bjson\b/i.test(response.headers.get('Content-Type') ?? '');
}

async function readStatus(response, signal) {
  if (!isJSON(response)) {
    discard(response);
    return undefined;
  }
  try {
    return await response.json();
  } catch (err) {
    if (signal?.aborted) {
      throw err;
    }
    return undefined;
  }
}

function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

// discard releases a body that will not be read. It does not wait: the
// cancellation of a cloned body completes only once its twin is canceled too.
function discard(response) {
  response.body?.cancel().catch(() => {});
}

// retryDelay is how long to wait before the next poll: the response's
// Retry-After (seconds or an HTTP date), never less than pollInterval.
function retryDelay(response, pollInterval) {
  const value = response.headers.get('Retry-After')?.trim();
  let millis = 0;
  if (value && /^\d+$/.test(value)) {
    millis = Number(value) * 1000;
  } else if (value) {
    const date = Date.parse(value);
    if (!Number.isNaN(date)) {
      millis = date - Date.now();
    }
  }
  return Math.max(millis, pollInterval);
}

function sleep(millis, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, millis);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
