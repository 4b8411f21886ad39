import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';

import {
  DEFAULT_WEBHOOK_TOLERANCE,
  WebhookVerificationError,
  verifyWebhook,
  verifyWebhookSignature,
} from 'asyncreply/webhook';

// The Standard Webhooks test vector: the libraries' shared secret, message
// ID, timestamp and payload, and the signature they all produce.
const vector = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  payload: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};
const vectorNow = vector.timestamp * 1000;

function vectorHeaders(signature = vector.signature) {
  return {
    'webhook-id': vector.id,
    'webhook-timestamp': String(vector.timestamp),
    'webhook-signature': signature,
  };
}

function refused(reason, says) {
  return (err) => {
    assert.ok(err instanceof WebhookVerificationError, `${err}`);
    assert.equal(err.name, 'WebhookVerificationError');
    assert.equal(err.reason, reason);
    if (says) {
      assert.match(err.message, says);
    }
    return true;
  };
}

test('the Standard Webhooks vector verifies', () => {
  for (const body of [vector.payload, Buffer.from(vector.payload), new TextEncoder().encode(vector.payload), new TextEncoder().encode(vector.payload).buffer]) {
    const bytes = verifyWebhookSignature(vector.secret, vectorHeaders(), body, { now: vectorNow });
    assert.equal(bytes.toString(), vector.payload);
  }
  // Without the prefix, and from a fetch Headers.
  verifyWebhookSignature(vector.secret.slice('whsec_'.length), new Headers(vectorHeaders()), vector.payload, { now: vectorNow });
});

test('one valid signature among several is enough (secret rotation)', () => {
  const signatures = [
    'v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=',
    'v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==',
    vector.signature,
    'v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=',
  ].join(' ');
  verifyWebhookSignature(vector.secret, vectorHeaders(signatures), vector.payload, { now: vectorNow });
  // Node joins a repeated header into an array.
  const headers = { ...vectorHeaders(), 'webhook-signature': ['v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=', vector.signature] };
  verifyWebhookSignature(vector.secret, headers, vector.payload, { now: vectorNow });
});

test('a wrong secret is refused', () => {
  const other = 'whsec_' + Buffer.from('another secret of 24 bytes').toString('base64');
  assert.throws(
    () => verifyWebhookSignature(other, vectorHeaders(), vector.payload, { now: vectorNow }),
    refused('signature', /no v1 signature of webhook msg_p5jXN8AQM9LWM0D4loKWxJek matches/),
  );
});

test('a tampered body is refused', () => {
  for (const body of ['{"test": 2432232315}', '{"test":2432232314}', '']) {
    assert.throws(() => verifyWebhookSignature(vector.secret, vectorHeaders(), body, { now: vectorNow }), refused('signature'));
  }
});

test('a stale or future timestamp is refused, within the tolerance accepted', () => {
  const late = vectorNow + DEFAULT_WEBHOOK_TOLERANCE + 1000;
  assert.throws(
    () => verifyWebhookSignature(vector.secret, vectorHeaders(), vector.payload, { now: late }),
    refused('timestamp', /tolerance 300 s/),
  );
  const early = vectorNow - DEFAULT_WEBHOOK_TOLERANCE - 1000;
  assert.throws(() => verifyWebhookSignature(vector.secret, vectorHeaders(), vector.payload, { now: early }), refused('timestamp'));
  verifyWebhookSignature(vector.secret, vectorHeaders(), vector.payload, { now: vectorNow + DEFAULT_WEBHOOK_TOLERANCE });
  assert.throws(
    () => verifyWebhookSignature(vector.secret, vectorHeaders(), vector.payload, { now: vectorNow + 120_000, tolerance: 60_000 }),
    refused('timestamp'),
  );
  verifyWebhookSignature(vector.secret, vectorHeaders(), vector.payload, { now: vectorNow + 1_800_000, tolerance: 3_600_000 });
  // Today's clock: the vector is years old.
  assert.throws(() => verifyWebhookSignature(vector.secret, vectorHeaders(), vector.payload), refused('timestamp'));
});

test('missing or malformed headers are refused', () => {
  for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
    const headers = vectorHeaders();
    delete headers[name];
    assert.throws(
      () => verifyWebhookSignature(vector.secret, headers, vector.payload, { now: vectorNow }),
      refused('signature', new RegExp(`no ${name} header`)),
    );
  }
  for (const signature of ['v1,', 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=', 'g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=', 'v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=']) {
    assert.throws(() => verifyWebhookSignature(vector.secret, vectorHeaders(signature), vector.payload, { now: vectorNow }), refused('signature'));
  }
  const headers = { ...vectorHeaders(), 'webhook-timestamp': '+1614265330' };
  assert.throws(() => verifyWebhookSignature(vector.secret, headers, vector.payload, { now: vectorNow }), refused('signature', /not seconds/));
});

test('a bad secret or a parsed body is the caller\'s error, and shows no secret', () => {
  for (const secret of ['', 'whsec_', 'whsec_not*base64!', undefined]) {
    assert.throws(
      () => verifyWebhookSignature(secret, vectorHeaders(), vector.payload, { now: vectorNow }),
      (err) => err instanceof TypeError && /secret/.test(err.message) && !(secret && err.message.includes(secret)),
    );
  }
  assert.throws(() => verifyWebhookSignature(vector.secret, vectorHeaders(), JSON.parse(vector.payload), { now: vectorNow }), /express\.raw/);
});

function sign(key, id, seconds, body) {
  const signature = createHmac('sha256', key).update(`${id}.${seconds}.${body}`).digest('base64');
  return { 'webhook-id': id, 'webhook-timestamp': String(seconds), 'webhook-signature': `v1,${signature}` };
}

test('verifyWebhook returns the CloudEvent', () => {
  const key = Buffer.from('a secret of thirty-two bytes....');
  const secret = 'whsec_' + key.toString('base64');
  const event = {
    specversion: '1.0',
    id: 'op1.Succeeded',
    source: 'https://api.example.com/operations/',
    type: 'asyncreply.operation.succeeded',
    subject: 'op1',
    time: '2026-12-01T12:00:00Z',
    datacontenttype: 'application/json',
    data: { id: 'op1', status: 'Succeeded' },
  };
  const body = JSON.stringify(event);
  const headers = sign(key, event.id, Math.floor(Date.now() / 1000), body);
  assert.deepEqual(verifyWebhook(secret, headers, Buffer.from(body)), event);
  assert.throws(() => verifyWebhook(secret, headers, body.replace('Succeeded', 'Failed')), refused('signature'));
  // Signed, but not a CloudEvent: the Standard Webhooks vector.
  assert.throws(() => verifyWebhook(vector.secret, vectorHeaders(), vector.payload, { now: vectorNow }), /not a CloudEvent/);
});

test('a node:http receiver, as in the README, verifies a webhook posted to it', async (t) => {
  const { createServer } = await import('node:http');
  const key = Buffer.from('a secret of thirty-two bytes....');
  const secret = 'whsec_' + key.toString('base64');
  const received = [];
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    try {
      const event = verifyWebhook(secret, req.headers, Buffer.concat(chunks));
      received.push(event.id);
      res.writeHead(204).end();
    } catch (err) {
      res.writeHead(err.name === 'WebhookVerificationError' ? 401 : 400).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  const url = `http://127.0.0.1:${server.address().port}/`;

  const body = JSON.stringify({ specversion: '1.0', id: 'op2.Failed', source: '/operations/', type: 'asyncreply.operation.failed', time: '2026-12-01T12:00:00Z' });
  const headers = { 'Content-Type': 'application/cloudevents+json', ...sign(key, 'op2.Failed', Math.floor(Date.now() / 1000), body) };
  assert.equal((await fetch(url, { method: 'POST', headers, body })).status, 204);
  assert.equal((await fetch(url, { method: 'POST', headers, body: body + ' ' })).status, 401);
  assert.equal((await fetch(url, { method: 'POST', headers: { ...headers, 'webhook-timestamp': '1614265330' }, body })).status, 401);
  assert.deepEqual(received, ['op2.Failed']);
});
