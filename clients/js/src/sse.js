// A text/event-stream parser for environments without EventSource (Node 20)
// and for requests EventSource cannot make (custom headers), following the
// HTML standard's "interpreting an event stream" rules.

const LINE_END = /\r\n|\r|\n/;

/**
 * Yields the events of an event stream as they are dispatched.
 *
 * @param {ReadableStream<Uint8Array>} body a response body
 * @param {{lastEventId?: string, retry?: number}} [state] updated in place
 *   with the last event ID and the reconnection time the stream sets
 * @returns {AsyncGenerator<{type: string, data: string, lastEventId: string}>}
 */
export async function* parseEventStream(body, state = {}) {
  // TextDecoderStream drops a leading byte order mark, as the standard asks.
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let type = '';
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return; // an event not followed by a blank line is discarded
      }
      buffer += value;
      for (;;) {
        const match = LINE_END.exec(buffer);
        // A CR ending the buffer may be the first half of a CRLF.
        if (!match || (match[0] === '\r' && match.index === buffer.length - 1)) {
          break;
        }
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (line === '') {
          if (data.length > 0) {
            yield { type: type || 'message', data: data.join('\n'), lastEventId: state.lastEventId ?? '' };
          }
          type = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) {
          continue; // a comment, such as a keep-alive
        }
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let fieldValue = colon < 0 ? '' : line.slice(colon + 1);
        if (fieldValue.startsWith(' ')) {
          fieldValue = fieldValue.slice(1);
        }
        switch (field) {
          case 'event':
            type = fieldValue;
            break;
          case 'data':
            data.push(fieldValue);
            break;
          case 'id':
            if (!fieldValue.includes('\0')) {
              state.lastEventId = fieldValue;
            }
            break;
          case 'retry':
            if (/^\d+$/.test(fieldValue)) {
              state.retry = Number(fieldValue);
            }
            break;
        }
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
