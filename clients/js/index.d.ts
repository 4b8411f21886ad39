/** An operation's state, as in the status document. */
export type OperationStatus = 'NotStarted' | 'Running' | 'Succeeded' | 'Failed' | 'Canceled';

/** What onProgress is told each time the operation's progress changes. */
export interface Progress {
  /** 0 to 100; 100 once the operation succeeded. */
  percent: number;
  /** The handler's description of its current step; may be empty. */
  message: string;
  status: OperationStatus;
}

export interface AsyncFetchOptions {
  /** Called whenever the percent, message or status changes. */
  onProgress?: (progress: Progress) => void;
  /**
   * Aborting it cancels the operation on the server (DELETE of its URL) and
   * rejects the promise with the signal's reason, an AbortError by default.
   * Defaults to init.signal.
   */
  signal?: AbortSignal;
  /**
   * The least time between two polls, in milliseconds; a longer Retry-After
   * from the server wins. Defaults to DEFAULT_POLL_INTERVAL (1000).
   */
  pollInterval?: number;
  /**
   * Whether to follow the operation by server-sent events when the server
   * offers them. false polls instead. Defaults to true.
   */
  events?: boolean;
}

/** The default of AsyncFetchOptions.pollInterval, in milliseconds. */
export declare const DEFAULT_POLL_INTERVAL: number;

/**
 * fetch(), following an asynchronous operation to its end: a 202 Accepted
 * answer's monitor URL is followed by server-sent events or polling, and the
 * promise resolves to the response a synchronous request would have had —
 * the stored response, or the failure's problem details with its status.
 * Any other first answer is returned as is.
 */
export declare function asyncFetch(
  input: RequestInfo | URL,
  init?: RequestInit,
  options?: AsyncFetchOptions,
): Promise<Response>;

/** What watchOperations is given with each change. */
export interface Change {
  /**
   * The change's cursor: options.after resumes after it. A change is sent
   * at least once; the client drops the repeats it remembers.
   */
  id: string;
}

export interface WatchOperationsOptions {
  /** Resume after this change's id (a Change.id seen before). Defaults to now. */
  after?: string;
  /**
   * Called each time the feed is connected: every change from then on is
   * delivered.
   */
  onOpen?: () => void;
  /**
   * Called when the feed fails: with a FeedError when the server refused it
   * (404 without an owner or credentials, 400 for a cursor it did not send,
   * 501 on a backend without a feed), after which watching stops; with
   * other errors for lost connections, after which it reconnects.
   */
  onError?: (error: Error) => void;
  /**
   * Headers for every request, e.g. Authorization. A browser WebSocket
   * cannot send them, so with headers the feed is read as server-sent
   * events over fetch.
   */
  headers?: HeadersInit;
  /** fetch()'s credentials for the server-sent events. */
  credentials?: RequestCredentials;
  /**
   * The WebSocket constructor to use. Defaults to globalThis.WebSocket (in
   * browsers and Node 22); where there is none (Node 20), or given null,
   * the feed is read as server-sent events.
   */
  WebSocket?: (new (url: string) => WebSocket) | null;
}

/** A feed the server refused. */
export declare class FeedError extends Error {
  /** The HTTP status of the refusal, or the WebSocket close code. */
  status: number;
}

/**
 * Calls onChange with the status document of every change to the caller's
 * own operations (created, running, progress, succeeded, failed, canceled),
 * from the feed at url (<prefix>events), until close(). It reconnects when
 * the connection is lost, resuming after the last change seen.
 */
export declare function watchOperations(
  url: string | URL,
  onChange: (operation: any, change: Change) => void,
  options?: WatchOperationsOptions,
): { close(): void };
