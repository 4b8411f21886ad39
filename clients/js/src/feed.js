// watchOperations: every change to the caller's own operations, from the
// server's feed (GET <prefix>events), over a WebSocket when there is one,
// as server-sent events otherwise, resuming from the last change seen
// whenever the connection is lost.

import { parseEventStream } from './sse.js';

// The wait before reconnecting when the server has set none, in
// milliseconds.
const DEFAULT_RETRY = 1000;

// How many recent change ids are remembered to drop the repeats a resumed
// feed may send (it re-sends the changes of a short window before the
// cursor, so that none committed late is lost).
const REMEMBERED = 1024;

/**
 * Calls onChange with the status document of every change to the caller's
 * operations, until close() is called.
 *
 * @param {string | URL} url the feed, <prefix>events (e.g.
 *   https://app.example/operations/events)
 * @param {(operation: object, change: {id: string}) => void} onChange
 * @param {import('../index.js').WatchOperationsOptions} [options]
 * @returns {{close: () => void}}
 */
export function watchOperations(url, onChange, options = {}) {
  const base = globalThis.location?.href;
  const feedURL = new URL(url, base);
  const { onError, headers, credentials } = options;
  const onOpen = () => {
    if (!signal.aborted) {
      options.onOpen?.();
    }
  };
  const WebSocketImpl = options.WebSocket === undefined ? globalThis.WebSocket : options.WebSocket;
  const useSocket = typeof WebSocketImpl === 'function' && !headers;
  const controller = new AbortController();
  const signal = controller.signal;
  let cursor = options.after ?? '';
  const seen = new Set();
  const deliver = (id, operation) => {
    if (seen.has(id)) {
      return; // a repeat of a resumed feed
    }
    seen.add(id);
    if (seen.size > REMEMBERED) {
      seen.delete(seen.values().next().value);
    }
    cursor = id;
    onChange(operation, { id });
  };
  const fail = (err) => {
    if (!signal.aborted) {
      onError?.(err);
    }
  };

  const run = useSocket
    ? followSocket(feedURL, WebSocketImpl, () => cursor, deliver, onOpen, fail, signal)
    : followStream(feedURL, { headers, credentials }, () => cursor, deliver, onOpen, fail, signal);
  run.catch(fail);
  return {
    close() {
      controller.abort();
    },
  };
}

// followStream reads the feed as server-sent events with fetch, so that
// custom headers can be sent, reconnecting with Last-Event-ID.
async function followStream(url, init, cursor, deliver, onOpen, fail, signal) {
  const state = { retry: DEFAULT_RETRY };
  while (!signal.aborted) {
    const headers = new Headers(init.headers);
    headers.set('Accept', 'text/event-stream');
    if (cursor()) {
      headers.set('Last-Event-ID', cursor());
    }
    let response;
    try {
      response = await fetch(url, { headers, credentials: init.credentials, signal });
    } catch (err) {
      if (signal.aborted) {
        return;
      }
      fail(err);
      await sleep(state.retry, signal);
      continue;
    }
    if (response.status === 429 || response.status === 503) {
      response.body?.cancel().catch(() => {});
      await sleep(retryAfter(response) ?? state.retry, signal);
      continue;
    }
    if (response.status !== 200) {
      // 404 (no owner, or credentials that name none), 400, 501: retrying
      // the same request cannot help.
      const detail = await response.text().catch(() => '');
      throw new FeedError(response.status, detail);
    }
    onOpen();
    const stream = parseEventStream(response.body, state);
    try {
      for await (const event of stream) {
        if (event.type === 'status') {
          deliver(event.lastEventId, JSON.parse(event.data));
        }
      }
    } catch (err) {
      if (signal.aborted) {
        return;
      }
      // the connection broke: reconnect
    }
    await sleep(state.retry, signal);
  }
}

// followSocket reads the feed over a WebSocket, sending the cursor to
// resume after as its first message.
function followSocket(url, WebSocketImpl, cursor, deliver, onOpen, fail, signal) {
  const socketURL = new URL(url);
  socketURL.protocol = socketURL.protocol === 'https:' ? 'wss:' : 'ws:';
  return new Promise((resolve, reject) => {
    let socket;
    let retry;
    const connect = () => {
      if (signal.aborted) {
        resolve();
        return;
      }
      let opened = false;
      socket = new WebSocketImpl(socketURL.href);
      socket.onopen = () => {
        opened = true;
        socket.send(JSON.stringify(cursor() ? { resume: cursor() } : {}));
        onOpen();
      };
      socket.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (err) {
          fail(err);
          return;
        }
        deliver(message.id, message.operation);
      };
      socket.onclose = (event) => {
        if (signal.aborted) {
          resolve();
          return;
        }
        if (event.code === 1008) {
          // The server refused what was sent: the cursor, most likely.
          reject(new FeedError(event.code, event.reason));
          return;
        }
        if (!opened) {
          fail(new FeedError(0, 'the feed socket did not open'));
        }
        retry = setTimeout(connect, DEFAULT_RETRY);
      };
    };
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(retry);
        socket?.close(1000);
        resolve();
      },
      { once: true },
    );
    connect();
  });
}

/** A feed the server refused: status is the HTTP status, or the close code. */
export class FeedError extends Error {
  constructor(status, detail) {
    super(`the operations feed was refused (${status})${detail ? `: ${detail}` : ''}`);
    this.name = 'FeedError';
    this.status = status;
  }
}

function retryAfter(response) {
  const seconds = Number(response.headers.get('Retry-After'));
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : undefined;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}
