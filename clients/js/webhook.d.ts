// Types of asyncreply/webhook, for Node receivers of asyncreply's webhooks.

/**
 * The event an asyncreply server delivers when an operation ends, in
 * webhooks and broker messages alike: a CloudEvents 1.0 event in its JSON
 * format.
 */
export interface CloudEvent {
  specversion: '1.0';
  /**
   * The same for every delivery of one event: deliveries are at least
   * once, and a receiver drops those whose id it has seen.
   */
  id: string;
  /** The server's monitor prefix. */
  source: string;
  type: 'asyncreply.operation.succeeded' | 'asyncreply.operation.failed' | 'asyncreply.operation.canceled';
  /** The operation's ID. */
  subject?: string;
  /** When the operation ended, RFC 3339. */
  time: string;
  datacontenttype?: string;
  /** The operation's status document. */
  data?: unknown;
}

export interface VerifyWebhookOptions {
  /**
   * How far the webhook-timestamp may be from the receiver's clock, either
   * way, in milliseconds, against replays. Defaults to
   * DEFAULT_WEBHOOK_TOLERANCE (five minutes).
   */
  tolerance?: number;
  /** The receiver's clock, in milliseconds since the epoch. Defaults to Date.now(). */
  now?: number;
}

/** The default of VerifyWebhookOptions.tolerance: five minutes, in milliseconds. */
export declare const DEFAULT_WEBHOOK_TOLERANCE: number;

/**
 * Thrown when a webhook does not verify; a receiver answers 401 and does
 * not act on it.
 */
export declare class WebhookVerificationError extends Error {
  name: 'WebhookVerificationError';
  /**
   * `signature`: a webhook-id, webhook-timestamp or webhook-signature
   * header missing, or no signature by the secret matches the body.
   * `timestamp`: signed, but outside the tolerance.
   */
  reason: 'signature' | 'timestamp';
}

/** A request's headers: fetch's Headers, or Node's `req.headers`. */
export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

/**
 * Checks that a webhook was signed with the endpoint's secret per Standard
 * Webhooks, and throws a WebhookVerificationError otherwise. `secret` is
 * `whsec_` and the key in base64, as the server was given it. The
 * webhook-signature header may list several space-separated signatures
 * while the sender rotates secrets; one valid `v1` (HMAC-SHA256) signature
 * is enough, compared in constant time. `body` must be the bytes exactly as
 * received, not parsed JSON (a TypeError says so). Returns those bytes.
 */
export declare function verifyWebhookSignature(
  secret: string,
  headers: WebhookHeaders,
  body: string | Uint8Array | ArrayBuffer,
  options?: VerifyWebhookOptions,
): Buffer;

/**
 * verifyWebhookSignature, then the CloudEvent the body carries (a
 * SyntaxError if it carries none).
 */
export declare function verifyWebhook(
  secret: string,
  headers: WebhookHeaders,
  body: string | Uint8Array | ArrayBuffer,
  options?: VerifyWebhookOptions,
): CloudEvent;
