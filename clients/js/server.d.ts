// Types of asyncreply/server, the application's side of the gateway's
// handshake for Node servers.

import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * What a deferral does:
 * - `gateway`: defers when the gateway forwarded the request as deferrable
 *   (`Asyncreply-Deferrable: 1`); without a gateway in front the handler
 *   simply runs.
 * - `inline`: never defers, and believes no `Asyncreply-*` header: the
 *   handler runs, same code, same URLs.
 * - `test`: stands in for the gateway in the application's own tests,
 *   recording every deferral in a {@link Recorder}.
 */
export type Mode = 'gateway' | 'inline' | 'test';

/**
 * The operation a deferral asks the gateway for, in whole seconds. A
 * parameter left out is the gateway's setting for the route.
 */
export interface DeferralOptions {
  /** The longest one replay may run; at least 1. */
  timeout?: number;
  /** How long the finished response is kept; at least 1. */
  retention?: number;
  /** How long the client's request may wait for the response before the 202; 0 or more. */
  wait?: number;
}

export interface RespondToAsyncOptions extends DeferralOptions {
  /**
   * Defers only the requests it returns true for. It is asked only of
   * requests that could be deferred, never of the replay. Defaults to
   * deferring every request.
   */
  if?: (req: IncomingMessage & AsyncRequest) => boolean;
}

export interface AsyncreplyOptions {
  /** Defaults to 'gateway'. */
  mode?: Mode;
  /** Where the test mode records deferrals; required with mode 'test', and only there. */
  recorder?: Recorder;
  /**
   * The longest a progress report may hold the handler that awaits it, in
   * milliseconds. Defaults to DEFAULT_PROGRESS_TIMEOUT (1000).
   */
  progressTimeout?: number;
}

/** What asyncreply() and respondToAsync() add to every request. */
export interface AsyncRequest {
  /** True while the gateway replays a deferred request: the handler does the work. */
  asyncReplay: boolean;
  /** The operation's ID during the replay; undefined otherwise. */
  asyncOperationId: string | undefined;
  /**
   * Reports how far the replay has got, for the clients polling the
   * operation: percent is rounded into 0–100. Outside a replay it does
   * nothing. The promise never rejects and settles within progressTimeout;
   * reports are delivered in order, one still waiting its turn replaced by
   * a newer one, so there is no need to await it.
   */
  asyncProgress(percent: number, message?: string): Promise<void>;
}

/** What asyncreply() and respondToAsync() add to every response. */
export interface AsyncResponse {
  /**
   * Defers this request when it can be, and returns true: the 202 for the
   * gateway goes once the request's body has arrived whole (the gateway
   * records it as it forwards it), and the handler must return. Returns false when the
   * handler should go on: during the replay, without a gateway in front,
   * in inline mode. Throws on invalid options, and when the response has
   * started.
   */
  deferAsync(options?: DeferralOptions): boolean;
}

/** A middleware for Express, and for node:http handlers, which may leave out next. */
export type AsyncMiddleware<Result> = (
  req: IncomingMessage,
  res: ServerResponse,
  next?: (err?: unknown) => void,
) => Result;

/** The longest a progress report may hold the handler that awaits it, in milliseconds. */
export declare const DEFAULT_PROGRESS_TIMEOUT: number;

/**
 * The application-level middleware: decorates every request and response
 * with {@link AsyncRequest} and {@link AsyncResponse}, in the chosen mode.
 * Throws on invalid options.
 */
export declare function asyncreply(options?: AsyncreplyOptions): AsyncMiddleware<void>;

/**
 * A middleware that defers every request it sees (those `if` accepts):
 * it calls next when the request goes on, and returns whether it deferred.
 * Without asyncreply() before it, it runs in gateway mode. Throws on
 * invalid options.
 */
export declare function respondToAsync(options?: RespondToAsyncOptions): AsyncMiddleware<boolean>;

/** One progress report of a replay the test mode performed. */
export interface ProgressReport {
  percent: number;
  message?: string;
}

/** A request the test mode deferred, recorded as the gateway records it. */
export interface DeferredRequest {
  /** Sent on the replay in Asyncreply-Operation. */
  readonly operationId: string;
  readonly method: string;
  /** The path and query, as the request had them: '/exports?kind=csv'. */
  readonly url: string;
  /** The path without the query: '/exports'. */
  readonly path: string;
  /** The request's headers (lowercase names), cookies included, less Asyncreply-* and those of the connection. */
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  readonly timeout: number | undefined;
  readonly retention: number | undefined;
  readonly wait: number | undefined;
  /** The URL the replay carries in Asyncreply-Progress; the test mode records the reports itself. */
  readonly progressURL: string;
  /** The replay's response, once performed. */
  response: Response | undefined;
  /** The replay's progress reports, in order. */
  readonly progress: ProgressReport[];
}

/** The test mode's record of deferrals: `asyncreply({ mode: 'test', recorder })`. */
export declare class Recorder {
  /** The deferred requests not replayed yet, oldest first. */
  deferred: DeferredRequest[];
  /** The replayed ones, with their responses and progress. */
  performed: DeferredRequest[];
  /**
   * Replays the deferred requests filter accepts (all by default), one
   * after the other, as the gateway would: same method, URL, headers,
   * cookies and body, with Asyncreply-Operation and Asyncreply-Progress.
   * app is a request listener (an Express app, a node:http handler), run
   * on a server of its own for the replays, or the URL of a running server.
   * Resolves to the responses, bodies read.
   */
  performDeferred(
    app: ((req: IncomingMessage, res: ServerResponse) => void) | string | URL,
    filter?: (deferred: DeferredRequest) => boolean,
  ): Promise<Response[]>;
  /** Forgets every deferred and performed request. */
  clear(): void;
}

declare global {
  // Express's request and response, where @types/express is installed.
  namespace Express {
    interface Request extends AsyncRequest {}
    interface Response extends AsyncResponse {}
  }
}
