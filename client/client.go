// Package client follows asynchronous HTTP operations for Go callers. Its
// Transport, given a 202 Accepted that names a monitor URL, follows the
// operation until it ends and returns the final response, as if the call had
// been synchronous: the stored response with its own status, headers and
// body, or the error status a synchronous caller would have seen.
//
// It speaks the asynchronous request-reply pattern as any server may
// implement it — 202 with Location, then 202 on polls while the operation
// runs, and 303 See Other to the result or the result itself — honouring
// Retry-After. It uses what an asyncreply server offers besides: long-polls
// with Prefer: wait=N, the Server-Sent Events stream named by the status
// document's links.events, and the progress the status document reports.
// When the request's context ends while an operation is followed, the
// operation is deleted on the server.
//
// An existing caller changes one line:
//
//	httpClient := client.New(nil) // was: http.DefaultClient
package client

import (
	"cmp"
	"net/http"
	"time"
)

// Defaults of Transport's fields.
const (
	DefaultMinPollInterval = 1 * time.Second
	DefaultMaxPollInterval = 30 * time.Second
	DefaultJitter          = 0.1
	DefaultLongPoll        = 20 * time.Second
	DefaultCancelTimeout   = 5 * time.Second
)

// Progress is how far an operation has got, as its server reports it.
type Progress struct {
	// Operation is the monitor URL being followed.
	Operation string
	// Status is the operation's status as reported: NotStarted, Running,
	// Succeeded, Failed or Canceled from an asyncreply server; empty when the
	// server reports none.
	Status string
	// Percent is from 0 to 100.
	Percent int
	// Message says what the operation is doing; it may be empty.
	Message string
}

// Transport is an http.RoundTripper that follows asynchronous operations:
// when a request is answered 202 Accepted with a Location (or a status
// document naming its monitor URL), RoundTrip polls or subscribes until the
// operation ends and returns the final response. Every other response is
// returned as Base gave it. The requests it sends on the caller's behalf
// are GETs (and a DELETE) with no body; they carry the caller's
// Authorization and Cookie headers only to the caller's own host, and the
// cookies the server sets along the way, as a browser would. A Transport is
// safe for concurrent use; its fields must not change once it is in use.
type Transport struct {
	// Base sends every request: the submit, polls, event streams, the
	// result and the DELETE. Defaults to http.DefaultTransport.
	Base http.RoundTripper

	// MinPollInterval is the shortest time between the starts of two
	// requests to a monitor URL, whatever Retry-After says; it is also the
	// interval when a server sends no Retry-After. Defaults to
	// DefaultMinPollInterval.
	MinPollInterval time.Duration

	// MaxPollInterval caps the interval a server's Retry-After asks for.
	// A value below MinPollInterval counts as MinPollInterval. Defaults to
	// DefaultMaxPollInterval.
	MaxPollInterval time.Duration

	// Jitter is the largest fraction of an interval added to it at random,
	// so that callers started together do not poll together. Negative means
	// none. Defaults to DefaultJitter.
	Jitter float64

	// LongPoll is how long each poll asks the server to hold it until the
	// operation ends, with Prefer: wait=N (whole seconds); a server that
	// does not support it answers at once and is polled at the usual
	// interval. Progress is seen only when a poll returns: with a Progress
	// callback and a server without events, a shorter LongPoll reports it
	// more often. Negative disables long-polling. Defaults to
	// DefaultLongPoll, below the 30-second limits of common proxies.
	LongPoll time.Duration

	// DisableEvents stops the Transport from subscribing to the Server-Sent
	// Events stream a status document's links.events names. Defaults to
	// false: events are used when offered, and polling when the stream
	// cannot be opened.
	DisableEvents bool

	// RespondAsync adds Prefer: respond-async to every request, asking the
	// server to answer 202 at once rather than wait for a result it may
	// have soon. Defaults to false.
	RespondAsync bool

	// Progress, when set, is called with the caller's request each time the
	// progress reported for its operation changes. It is called from the
	// goroutine of RoundTrip and must not block for long. Defaults to nil:
	// progress is not reported.
	Progress func(req *http.Request, p Progress)

	// CancelTimeout bounds the DELETE sent to the monitor URL when the
	// request's context ends while its operation is followed. Defaults to
	// DefaultCancelTimeout.
	CancelTimeout time.Duration
}

// New returns an http.Client whose Transport is t, or a Transport with every
// default when t is nil. The client has no Timeout: a request waits as long
// as its operation runs, unless its context ends sooner.
func New(t *Transport) *http.Client {
	if t == nil {
		t = &Transport{}
	}
	return &http.Client{Transport: t}
}

// RoundTrip sends req and, when it is answered 202 Accepted with a monitor
// URL, follows the operation until it ends. The final response's Request is
// req, so that relative redirects and Response.Location resolve against the
// URL the caller asked for. When req's context ends first, the operation is
// deleted and the context's error returned.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base().RoundTrip(t.submission(req))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		return resp, err
	}
	op, doc := t.accepted(req, resp)
	if op == nil {
		return resp, nil
	}
	return op.follow(req.Context(), doc)
}

// CloseIdleConnections closes Base's idle connections, for
// http.Client.CloseIdleConnections.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base().(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// submission is req as sent: with Prefer: respond-async when asked for. A
// RoundTripper must not change the request it is given, so that is a clone
// (sharing the body, which is sent once).
func (t *Transport) submission(req *http.Request) *http.Request {
	if !t.RespondAsync {
		return req
	}
	r := req.Clone(req.Context())
	r.Header.Add("Prefer", "respond-async")
	return r
}

func (t *Transport) base() http.RoundTripper {
	if t.Base == nil {
		return http.DefaultTransport
	}
	return t.Base
}

func (t *Transport) minPollInterval() time.Duration {
	return cmp.Or(max(t.MinPollInterval, 0), DefaultMinPollInterval)
}

func (t *Transport) maxPollInterval() time.Duration {
	return max(cmp.Or(max(t.MaxPollInterval, 0), DefaultMaxPollInterval), t.minPollInterval())
}

func (t *Transport) jitter() float64 {
	switch {
	case t.Jitter < 0:
		return 0
	case t.Jitter == 0:
		return DefaultJitter
	}
	return t.Jitter
}

func (t *Transport) cancelTimeout() time.Duration {
	return cmp.Or(max(t.CancelTimeout, 0), DefaultCancelTimeout)
}

// longPollSeconds is N of Prefer: wait=N, 0 for no long-polls.
func (t *Transport) longPollSeconds() int {
	switch {
	case t.LongPoll < 0:
		return 0
	case t.LongPoll == 0:
		return int(DefaultLongPoll / time.Second)
	}
	return int(t.LongPoll / time.Second)
}
