// asyncreply/webhook: checks, in a Node receiver, that a webhook came from
// the asyncreply server that holds the endpoint's secret — Standard Webhooks
// signatures (https://www.standardwebhooks.com) — and returns the CloudEvent
// it carries. Node only (node:crypto), hence apart from the browser entry.

import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * How far a webhook's timestamp may be from the receiver's clock, either
 * way, in milliseconds: five minutes.
 */
export const DEFAULT_WEBHOOK_TOLERANCE = 5 * 60 * 1000;

/**
 * Thrown when a webhook does not verify. `reason` is `signature` (a header
 * missing, or no signature by the secret matches the body) or `timestamp`
 * (signed, but outside the tolerance: a replay, or a clock far off). A
 * receiver answers 401 and does not act on the request.
 */
export class WebhookVerificationError extends Error {
  constructor(message, reason) {
    super(message);
    this.name = 'WebhookVerificationError';
    this.reason = reason;
  }
}

/**
 * Verifies a webhook's signature, as verifyWebhookSignature does, and
 * returns the CloudEvent its body carries.
 *
 * @param {string} secret
 * @param {Headers | Record<string, string | string[] | undefined>} headers
 * @param {string | Uint8Array | ArrayBuffer} body
 * @param {import('../webhook.js').VerifyWebhookOptions} [options]
 * @returns {import('../webhook.js').CloudEvent}
 */
export function verifyWebhook(secret, headers, body, options) {
  const bytes = verifyWebhookSignature(secret, headers, body, options);
  const id = header(headers, 'webhook-id');
  let event;
  try {
    event = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new SyntaxError(`webhook ${id} is signed but its body is not a CloudEvent in JSON: ${err.message}`);
  }
  if (typeof event !== 'object' || event === null || !event.specversion || !event.id || !event.type) {
    throw new SyntaxError(`webhook ${id} is signed but its body is not a CloudEvent: no specversion, id or type`);
  }
  return event;
}

/**
 * Verifies that a webhook was signed with secret, whatever its body, and
 * throws a WebhookVerificationError otherwise; webhook.d.ts states the
 * rules.
 *
 * @param {string} secret
 * @param {Headers | Record<string, string | string[] | undefined>} headers
 * @param {string | Uint8Array | ArrayBuffer} body
 * @param {import('../webhook.js').VerifyWebhookOptions} [options]
 * @returns {Buffer} the body's bytes
 */
export function verifyWebhookSignature(secret, headers, body, options = {}) {
  const { tolerance = DEFAULT_WEBHOOK_TOLERANCE, now = Date.now() } = options;
  const key = webhookKey(secret);
  const bytes = bodyBytes(body);
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  for (const [name, value] of [['webhook-id', id], ['webhook-timestamp', timestamp], ['webhook-signature', signatures]]) {
    if (!value) {
      throw new WebhookVerificationError(`webhook signature does not verify: no ${name} header`, 'signature');
    }
  }
  if (!/^\d+$/.test(timestamp)) {
    throw new WebhookVerificationError(
      `webhook signature does not verify: webhook-timestamp ${JSON.stringify(timestamp)} is not seconds since the epoch`,
      'signature',
    );
  }

  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(bytes).digest();
  let valid = false;
  for (const signature of signatures.split(/ +/)) {
    const comma = signature.indexOf(',');
    if (comma < 0 || signature.slice(0, comma) !== 'v1') {
      continue; // another scheme (v1a, asymmetric), or not a signature
    }
    const given = Buffer.from(signature.slice(comma + 1), 'base64');
    // timingSafeEqual needs equal lengths; a length says nothing secret.
    if (given.length === expected.length && timingSafeEqual(given, expected)) {
      valid = true;
      break;
    }
  }
  if (!valid) {
    throw new WebhookVerificationError(
      `webhook signature does not verify: no v1 signature of webhook ${id} matches the secret`,
      'signature',
    );
  }

  const limit = tolerance > 0 ? tolerance : DEFAULT_WEBHOOK_TOLERANCE;
  const age = now - Number(timestamp) * 1000;
  if (Math.abs(age) > limit) {
    throw new WebhookVerificationError(
      `webhook timestamp outside the tolerance: webhook ${id} was signed at ${new Date(Number(timestamp) * 1000).toISOString()}, ${Math.round(age / 1000)} s from now (tolerance ${limit / 1000} s)`,
      'timestamp',
    );
  }
  return bytes;
}

// webhookKey decodes a whsec_ secret; its errors never show the secret.
function webhookKey(secret) {
  if (typeof secret !== 'string') {
    throw new TypeError('webhook secret must be a string: whsec_ followed by base64');
  }
  const encoded = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : secret;
  if (encoded === '') {
    throw new TypeError('webhook secret is empty');
  }
  // Padding may be left out, as some secrets are written.
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) {
    throw new TypeError('webhook secret is not whsec_ followed by base64');
  }
  return Buffer.from(encoded, 'base64');
}

// bodyBytes is the body as received. A parsed body (express.json() ran
// first) cannot be verified: its bytes are gone.
function bodyBytes(body) {
  if (typeof body === 'string') {
    return Buffer.from(body, 'utf8');
  }
  if (body instanceof ArrayBuffer) {
    return Buffer.from(body);
  }
  if (ArrayBuffer.isView(body)) {
    return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  }
  throw new TypeError(
    'webhook body must be the raw bytes received (string, Buffer, Uint8Array or ArrayBuffer), not a parsed object: with Express, use express.raw({ type: "*/*" }) on the route',
  );
}

// header reads a header from a fetch Headers or from Node's
// IncomingMessage.headers (lowercase names), whichever headers is.
function header(headers, name) {
  if (headers == null) {
    return '';
  }
  if (typeof headers.get === 'function') {
    return headers.get(name) ?? '';
  }
  let value = headers[name];
  if (value === undefined) {
    const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
    value = key === undefined ? undefined : headers[key];
  }
  if (Array.isArray(value)) {
    return value.join(' ');
  }
  return value ?? '';
}
