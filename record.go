package asyncreply

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// recordedRequest is what is kept of an incoming request so that a worker can
// replay it later through the same application: everything the application's
// middleware and handler may look at, credentials included.
type recordedRequest struct {
	Method     string
	RequestURI string // path and query as the client sent them
	Host       string
	RemoteAddr string
	TLS        bool
	Header     http.Header
	Body       []byte
	// Trace is the submit's span, whose child each replay's is; nil when
	// tracing was off at submit. A pointer, so that the struct stays in its
	// allocation size class when tracing is off.
	Trace *trace.SpanContext
}

// hopByHopHeaders are the request headers addressed to the server that
// received the request rather than to the application (RFC 9110 §7.6.1,
// and those net/http/httputil.ReverseProxy removes). Proxy-Authorization is
// a client's credential for a proxy: keeping it would store a password that
// no replay needs.
var hopByHopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// recordedHeader returns the header to record of a request whose header is
// h: h without its hop-by-hop headers and those its Connection header names,
// which meant something to this connection only. It returns h itself, not a
// copy, when there is nothing to remove.
func recordedHeader(h http.Header) http.Header {
	if !slices.ContainsFunc(hopByHopHeaders, func(name string) bool { return h[name] != nil }) {
		return h
	}
	h = h.Clone()
	for _, line := range h["Connection"] {
		for name := range strings.SplitSeq(line, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHopHeaders {
		delete(h, name)
	}
	return h
}

// storedResponse is a response recorded during replay, served verbatim later.
type storedResponse struct {
	StatusCode int
	Header     http.Header
	Body       []byte
	// Head marks the answer to a HEAD request: it has no body, and its
	// Content-Length, if any, is the length of the body a GET would have.
	Head bool
	// Trace is the span of the replay that stored the response, which a
	// collect of it links to; nil when tracing was off.
	Trace *trace.SpanContext
}

// The encodings are length-prefixed binary, versioned by their first byte:
// compact and several times faster than JSON on the accept path.
// A V1 or V2 encoding is written while tracing is off, so that a process
// of an earlier version sharing the backend still reads it.
const (
	recordedRequestV1 = 1
	recordedRequestV2 = 2 // V1 with a trace context after the body
	storedResponseV1  = 1
	storedResponseV2  = 2 // V1 with a flags byte after the status code
	storedResponseV3  = 3 // V2 with a trace context after the body
)

// storedResponseHead is the flag of a storedResponse.Head.
const storedResponseHead = 1 << 0

func (rr *recordedRequest) marshal() []byte {
	size := 32 + len(rr.Method) + len(rr.RequestURI) + len(rr.Host) + len(rr.RemoteAddr) + headerSize(rr.Header) + len(rr.Body)
	version := byte(recordedRequestV1)
	if rr.Trace != nil {
		version = recordedRequestV2
		size += traceContextSize(*rr.Trace)
	}
	b := make([]byte, 0, size)
	b = append(b, version)
	b = appendString(b, rr.Method)
	b = appendString(b, rr.RequestURI)
	b = appendString(b, rr.Host)
	b = appendString(b, rr.RemoteAddr)
	if rr.TLS {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendHeader(b, rr.Header)
	b = appendBytes(b, rr.Body)
	if version == recordedRequestV2 {
		b = appendTraceContext(b, *rr.Trace)
	}
	return b
}

func unmarshalRecordedRequest(data []byte) (*recordedRequest, error) {
	d := decoder{data: data}
	version := d.byte()
	if version != recordedRequestV1 && version != recordedRequestV2 {
		return nil, fmt.Errorf("recorded request: unknown encoding version %d", version)
	}
	rr := &recordedRequest{
		Method:     d.string(),
		RequestURI: d.string(),
		Host:       d.string(),
		RemoteAddr: d.string(),
		TLS:        d.byte() == 1,
		Header:     d.header(),
		Body:       d.bytes(),
	}
	if version >= recordedRequestV2 {
		rr.Trace = d.traceContext()
	}
	if d.err != nil {
		return nil, fmt.Errorf("recorded request: %w", d.err)
	}
	return rr, nil
}

// newRequest rebuilds the recorded request for replay, under ctx.
func (rr *recordedRequest) newRequest(ctx context.Context) (*http.Request, error) {
	u, err := url.ParseRequestURI(rr.RequestURI)
	if err != nil {
		return nil, fmt.Errorf("recorded request: %w", err)
	}
	r := &http.Request{
		Method:        rr.Method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rr.Header, // decoded afresh for each replay: the request may own it
		Host:          rr.Host,
		RemoteAddr:    rr.RemoteAddr,
		RequestURI:    rr.RequestURI,
		ContentLength: int64(len(rr.Body)),
		Body:          http.NoBody,
	}
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	if len(rr.Body) > 0 {
		body := rr.Body
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	if rr.TLS {
		// Handlers test r.TLS != nil for "was this HTTPS"; the replay must
		// answer as the original request would have.
		r.TLS = replayedTLS
	}
	return r.WithContext(ctx), nil
}

// replayedTLS marks a replayed request that first arrived over TLS. The
// original connection's state is gone; its presence is what handlers check.
var replayedTLS = &tls.ConnectionState{HandshakeComplete: true}

func (sr *storedResponse) marshal() []byte {
	size, version := 16+headerSize(sr.Header)+len(sr.Body), byte(storedResponseV2)
	if sr.Trace != nil {
		size, version = size+traceContextSize(*sr.Trace), storedResponseV3
	}
	b := make([]byte, 0, size)
	b = append(b, version)
	b = binary.AppendUvarint(b, uint64(sr.StatusCode))
	var flags byte
	if sr.Head {
		flags |= storedResponseHead
	}
	b = append(b, flags)
	b = appendHeader(b, sr.Header)
	b = appendBytes(b, sr.Body)
	if version == storedResponseV3 {
		b = appendTraceContext(b, *sr.Trace)
	}
	return b
}

func unmarshalStoredResponse(data []byte) (*storedResponse, error) {
	d := decoder{data: data}
	version := d.byte()
	if version < storedResponseV1 || version > storedResponseV3 {
		return nil, fmt.Errorf("stored response: unknown encoding version %d", version)
	}
	sr := &storedResponse{StatusCode: int(d.uvarint())}
	if version >= storedResponseV2 {
		sr.Head = d.byte()&storedResponseHead != 0
	}
	sr.Header, sr.Body = d.header(), d.bytes()
	if version >= storedResponseV3 {
		sr.Trace = d.traceContext()
	}
	if d.err != nil {
		return nil, fmt.Errorf("stored response: %w", d.err)
	}
	return sr, nil
}

func headerSize(h http.Header) int {
	n := 0
	for k, vs := range h {
		n += len(k) + 4
		for _, v := range vs {
			n += len(v) + 2
		}
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendHeader(b []byte, h http.Header) []byte {
	b = binary.AppendUvarint(b, uint64(len(h)))
	for k, vs := range h {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return b
}

// traceIDs is the length of a trace context's IDs and flags as encoded:
// the trace ID, the span ID and the W3C trace flags.
const traceIDs = len(trace.TraceID{}) + len(trace.SpanID{}) + 1

func traceContextSize(sc trace.SpanContext) int {
	return 2 + traceIDs + len(sc.TraceState().String()) + 2
}

// appendTraceContext appends a span's W3C trace context: its IDs and flags,
// and its tracestate as the header carries it.
func appendTraceContext(b []byte, sc trace.SpanContext) []byte {
	traceID, spanID := sc.TraceID(), sc.SpanID()
	ids := make([]byte, 0, traceIDs)
	ids = append(append(append(ids, traceID[:]...), spanID[:]...), byte(sc.TraceFlags()))
	b = appendBytes(b, ids)
	return appendString(b, sc.TraceState().String())
}

var errTruncated = errors.New("truncated or corrupt data")

// decoder reads the encodings above; the first error sticks and later reads
// return zero values, so callers check err once at the end.
type decoder struct {
	data []byte
	err  error
}

func (d *decoder) fail() { d.err, d.data = errTruncated, nil }

func (d *decoder) byte() byte {
	if len(d.data) < 1 {
		d.fail()
		return 0
	}
	c := d.data[0]
	d.data = d.data[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.data)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.data)) {
		d.fail()
		return nil
	}
	p := d.data[:n:n]
	d.data = d.data[n:]
	return p
}

func (d *decoder) string() string { return string(d.bytes()) }

// traceContext reads what appendTraceContext wrote, as the context of a
// remote span: the process that started it may be another. A tracestate
// that no longer parses is dropped, not the trace.
func (d *decoder) traceContext() *trace.SpanContext {
	ids, state := d.bytes(), d.string()
	if d.err != nil {
		return nil
	}
	if len(ids) != traceIDs {
		d.fail()
		return nil
	}
	var cfg trace.SpanContextConfig
	copy(cfg.TraceID[:], ids)
	copy(cfg.SpanID[:], ids[len(cfg.TraceID):])
	cfg.TraceFlags = trace.TraceFlags(ids[traceIDs-1])
	cfg.TraceState, _ = trace.ParseTraceState(state)
	cfg.Remote = true
	sc := trace.NewSpanContext(cfg)
	return &sc
}

func (d *decoder) header() http.Header {
	n := d.uvarint()
	if n > uint64(len(d.data)) { // each entry takes at least one byte
		d.fail()
		return nil
	}
	h := make(http.Header, n)
	for range n {
		k := d.string()
		count := d.uvarint()
		if count > uint64(len(d.data)) {
			d.fail()
			return nil
		}
		vs := make([]string, 0, count)
		for range count {
			vs = append(vs, d.string())
		}
		h[k] = vs
	}
	return h
}
