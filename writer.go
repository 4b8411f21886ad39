package asyncreply

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// trackingWriter wraps the client's ResponseWriter on first arrival so that
// Defer can tell whether the handler already started its response. It keeps
// the optional interfaces: Unwrap for http.ResponseController, and Flush and
// Hijack for code that type-asserts them.
type trackingWriter struct {
	http.ResponseWriter
	wroteHeader bool
}

func (w *trackingWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.wroteHeader = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(p)
}

func (w *trackingWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wroteHeader = true
	return io.Copy(w.ResponseWriter, r)
}

func (w *trackingWriter) Flush() {
	w.wroteHeader = true
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *trackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.wroteHeader = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// recordingBody replaces the request body on first arrival. It passes reads
// through and keeps a copy, up to a limit, so that a handler may read some of
// the body before calling Defer and the replay still gets all of it.
//
// The reader may be another goroutine than the one that defers: a reverse
// proxy's transport goes on sending the body to the upstream after the
// upstream has answered, and the gateway defers on that answer. So reads
// and finish take turns under mu, and once finish has begun the reader is
// told the body is gone: every byte is read once, by one of them, and kept
// in order.
type recordingBody struct {
	src io.ReadCloser

	mu       sync.Mutex
	buf      bytes.Buffer
	limit    int64
	overflow bool // more than limit bytes were read
	eof      bool // the handler read it all: nothing is left to read
	finished bool // finish has taken the body over
}

// errBodyTaken is what a reader still reading gets once the request was
// deferred: the rest of the body belongs to the recording.
var errBodyTaken = errors.New("asyncreply: the request was deferred; its body is being recorded")

func (b *recordingBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return 0, errBodyTaken
	}
	n, err := b.src.Read(p)
	b.keep(p[:n])
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *recordingBody) Close() error { return b.src.Close() }

func (b *recordingBody) keep(p []byte) {
	if b.overflow {
		return
	}
	if int64(b.buf.Len()+len(p)) > b.limit {
		b.overflow = true
		b.buf = bytes.Buffer{} // a body that cannot be replayed need not be kept
		return
	}
	b.buf.Write(p)
}

var errBodyTooLarge = errors.New("request body too large")

// finish reads what the handler left unread and returns the whole body.
func (b *recordingBody) finish() ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = true
	if !b.overflow && !b.eof { // a handler may have closed a body it read to the end
		// Read one byte past the limit to tell "exactly at" from "over".
		rest := io.LimitReader(b.src, b.limit-int64(b.buf.Len())+1)
		if _, err := b.buf.ReadFrom(rest); err != nil {
			return nil, fmt.Errorf("reading request body: %w", err)
		}
		if int64(b.buf.Len()) > b.limit {
			b.overflow = true
		}
	}
	if b.overflow {
		return nil, errBodyTooLarge
	}
	return b.buf.Bytes(), nil
}

// responseRecorder is the ResponseWriter of a replay: it captures the
// response to store it. Streaming handlers work (Flush is accepted, and the
// stored body is everything written); a body over the limit makes writes
// fail so that the handler stops, and the operation fails rather than store a
// truncated response. The replay of a HEAD request keeps no body: as
// net/http does, it accepts and discards what the handler writes.
type responseRecorder struct {
	header      http.Header // the handler's, which it may keep changing
	sent        http.Header // a snapshot taken at WriteHeader, as net/http would send
	status      int
	body        bytes.Buffer
	limit       int64
	head        bool // recording the answer to a HEAD request
	overflow    bool
	wroteHeader bool
}

func newResponseRecorder(limit int64, method string) *responseRecorder {
	return &responseRecorder{header: make(http.Header), limit: limit, head: method == http.MethodHead}
}

func (rec *responseRecorder) Header() http.Header { return rec.header }

func (rec *responseRecorder) WriteHeader(code int) {
	if rec.wroteHeader || code < 200 { // informational responses are not stored
		return
	}
	rec.status, rec.wroteHeader = code, true
	rec.sent = rec.header.Clone()
}

var errResponseTooLarge = errors.New("response body exceeds the configured limit")

func (rec *responseRecorder) Write(p []byte) (int, error) {
	rec.WriteHeader(http.StatusOK)
	if rec.head {
		return len(p), nil
	}
	if rec.overflow || int64(rec.body.Len()+len(p)) > rec.limit {
		rec.overflow = true
		return 0, errResponseTooLarge
	}
	return rec.body.Write(p)
}

// Flush accepts streaming handlers' flushes; the response is stored whole.
func (rec *responseRecorder) Flush() { rec.WriteHeader(http.StatusOK) }

// response is the recorded response. Trailers become ordinary headers: the
// stored response is served whole, so they are known before the body.
func (rec *responseRecorder) response() *storedResponse {
	rec.WriteHeader(http.StatusOK)
	header := rec.sent
	for _, names := range header.Values("Trailer") {
		for name := range strings.SplitSeq(names, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if vs := rec.header.Values(name); len(vs) > 0 {
				header[name] = vs
			}
		}
	}
	header.Del("Trailer")
	for name, vs := range rec.header {
		if trailer, ok := strings.CutPrefix(name, http.TrailerPrefix); ok {
			header[http.CanonicalHeaderKey(trailer)] = vs
		}
	}
	return &storedResponse{StatusCode: rec.status, Header: header, Body: rec.body.Bytes(), Head: rec.head}
}
