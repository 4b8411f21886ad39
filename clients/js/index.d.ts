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
