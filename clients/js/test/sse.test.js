import assert from 'node:assert/strict';
import { test } from 'node:test';

import { parseEventStream } from '../src/sse.js';

function streamOf(chunks) {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) {
        controller.enqueue(typeof chunk === 'string' ? encoder.encode(chunk) : chunk);
      }
      controller.close();
    },
  });
}

async function collect(chunks, state = {}) {
  const events = [];
  for await (const event of parseEventStream(streamOf(chunks), state)) {
    events.push(event);
  }
  return events;
}

test('parses fields, comments and multi-line data', async () => {
  const state = {};
  const events = await collect(
    ['\uFEFFretry: 2500\n\n', ': keep-alive\n\n', 'event: status\nid: a1\ndata: {"x":\ndata: 1}\n\n', 'data:plain\n\n'],
    state,
  );
  assert.deepEqual(events, [
    { type: 'status', data: '{"x":\n1}', lastEventId: 'a1' },
    { type: 'message', data: 'plain', lastEventId: 'a1' },
  ]);
  assert.equal(state.retry, 2500);
  assert.equal(state.lastEventId, 'a1');
});

test('splits lines at CRLF, CR and LF across chunk boundaries', async () => {
  const text = 'event: status\r\ndata: one\r\rdata: two\n\nevent: status\rdata: three\r\n\r\n';
  const want = [
    { type: 'status', data: 'one', lastEventId: '' },
    { type: 'message', data: 'two', lastEventId: '' },
    { type: 'status', data: 'three', lastEventId: '' },
  ];
  for (let size = 1; size <= text.length; size++) {
    const chunks = [];
    for (let i = 0; i < text.length; i += size) {
      chunks.push(text.slice(i, i + size));
    }
    assert.deepEqual(await collect(chunks), want, `chunks of ${size}`);
  }
});

test('decodes UTF-8 split across chunks', async () => {
  const bytes = new TextEncoder().encode('data: 40 % — déjà\n\n');
  const events = await collect([bytes.slice(0, 12), bytes.slice(12, 13), bytes.slice(13)]);
  assert.equal(events[0].data, '40 % — déjà');
});

test('drops an event the stream cut off', async () => {
  assert.deepEqual(await collect(['data: complete\n\n', 'data: cut']), [
    { type: 'message', data: 'complete', lastEventId: '' },
  ]);
});

test('stopping early cancels the body', async () => {
  let canceled = false;
  const body = new ReadableStream({
    pull(controller) {
      controller.enqueue(new TextEncoder().encode('data: tick\n\n'));
    },
    cancel() {
      canceled = true;
    },
  });
  for await (const event of parseEventStream(body)) {
    assert.equal(event.data, 'tick');
    break;
  }
  await new Promise((resolve) => setTimeout(resolve, 10)); // cancel travels through the pipe
  assert.ok(canceled, 'the body was not canceled');
});
