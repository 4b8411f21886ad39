package client

import (
	"bufio"
	"context"
	"io"
	"mime"
	"net/http"
	"strings"
)

// maxEventLine bounds one line of an event stream.
const maxEventLine = 1 << 20

// watch reads the operation's event stream until a status document says the
// operation has ended, and returns that document. When the stream cannot be
// opened, or ends without a word, it gives events up, and the operation is
// polled instead; when it ends after some events (a proxy cut it), it
// returns nil and may be opened again after a poll. Its error is the
// context's, when it ends.
func (op *operation) watch(ctx context.Context) (*statusDocument, error) {
	req := op.newRequest(ctx, http.MethodGet, op.events)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := op.send(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		op.eventsDead = true
		return nil, nil
	}
	defer resp.Body.Close()
	if mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); resp.StatusCode != http.StatusOK || mediaType != "text/event-stream" {
		op.eventsDead = true
		return nil, nil
	}
	var last *statusDocument
	received := false
	readEvents(resp.Body, func(data string) bool {
		doc := parseStatusDocument([]byte(data))
		if doc == nil {
			return true
		}
		received = true
		op.observe(doc)
		last = doc
		return !doc.finished()
	})
	if last.finished() {
		return last, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if !received {
		op.eventsDead = true
	}
	return nil, nil
}

// readEvents parses a Server-Sent Events stream and gives each event's data
// to handle until handle returns false or the stream ends. Event names are
// not needed: a status document is recognised by its content.
func readEvents(r io.Reader, handle func(data string) bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4<<10), maxEventLine)
	var data strings.Builder
	hasData := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if hasData && !handle(data.String()) {
				return
			}
			data.Reset()
			hasData = false
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		if field != "data" {
			continue // comments (keep-alives), event names, ids, retry
		}
		if hasData {
			data.WriteByte('\n')
		}
		data.WriteString(strings.TrimPrefix(value, " "))
		hasData = true
	}
}
