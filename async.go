package asyncreply

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/notify"
)

// Async makes every request to h asynchronous: on first arrival the request
// is recorded and answered 202 Accepted with a monitor URL; when a worker
// replays it, h runs and its response is stored for the client to collect.
//
// Async needs the Middleware's Handler around the application. Without it,
// requests run h synchronously, as if Async were not there.
func Async(h http.Handler) http.Handler {
	return AsyncWith(h, RouteOptions{})
}

// RouteOptions tune the operations of one route, overriding the
// Middleware's Config for them: an export may be kept a week and run an
// hour while the rest keep the defaults. A zero field keeps the Config's
// value; a negative one is a programming error, and AsyncWith and
// DeferWith panic on it, as http.ServeMux does on a malformed pattern.
type RouteOptions struct {
	// Wait is how long a request waits for its answer before falling back to
	// 202 Accepted (Config.Wait). A client's Prefer header still wins.
	Wait time.Duration
	// Timeout bounds one execution (Config.Timeout).
	Timeout time.Duration
	// Retention is how long the finished operation is kept (Config.Retention).
	Retention time.Duration
	// Notify is a webhook called when each of the route's operations
	// finishes (Config.Notify.URL), signed with Config.Notify.Secrets. It
	// is never shown to clients.
	Notify string
}

func (o RouteOptions) check() {
	if o.Wait < 0 || o.Timeout < 0 || o.Retention < 0 {
		panic(fmt.Sprintf("asyncreply: negative RouteOptions %+v", o))
	}
	if o.Notify != "" {
		if err := notify.CheckURL(o.Notify); err != nil {
			panic("asyncreply: RouteOptions.Notify: " + err.Error())
		}
	}
}

// AsyncWith is Async with options for the route's operations.
func AsyncWith(h http.Handler, opts RouteOptions) http.Handler {
	opts.check()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if deferRequest(w, r, opts) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Defer makes this one request asynchronous, from inside a handler. It
// returns true when the request has been answered — 202 Accepted, or an error
// such as 413 or 503 — and the handler must return without writing anything.
// It returns false when the handler should go on: during the replay (so the
// same handler, reached again, does the real work), and when the request
// did not pass through a Middleware's Handler.
//
// Everything the handler did before calling Defer happens again on replay:
// call Defer before doing real work.
func Defer(w http.ResponseWriter, r *http.Request) bool {
	return deferRequest(w, r, RouteOptions{})
}

// DeferWith is Defer with options for this request's operation.
func DeferWith(w http.ResponseWriter, r *http.Request, opts RouteOptions) bool {
	opts.check()
	return deferRequest(w, r, opts)
}

func deferRequest(w http.ResponseWriter, r *http.Request, opts RouteOptions) bool {
	st := stateFrom(r.Context())
	if st == nil || st.replay != nil {
		return false
	}
	return st.m.deferToOperation(w, r, st, opts)
}

// ReportProgress records how far the operation executing under ctx has got,
// for pollers and event subscribers. percent is clamped to 0–100. Outside an
// operation (a synchronous request) it does nothing, so handlers can call it
// unconditionally.
func ReportProgress(ctx context.Context, percent int, message string) {
	st := stateFrom(ctx)
	if st == nil || st.replay == nil {
		return
	}
	st.m.reportProgress(ctx, st.replay.id, min(max(percent, 0), 100), message)
}

// Fail ends the operation whose replay ctx belongs to as failed, without a
// response: pollers get status, with problem details made of title and
// detail, as a synchronous caller would have got that error. The handler
// must return without writing. Use it for failures that are not the
// application's answer — an unreachable upstream, say — which would
// otherwise be stored as a successful response. Outside a replay it does
// nothing and returns false.
func Fail(ctx context.Context, status int, title, detail string) bool {
	st := stateFrom(ctx)
	if st == nil || st.replay == nil {
		return false
	}
	st.replay.failure = &backend.Failure{Status: status, Title: title, Detail: detail}
	return true
}

// OperationID returns the ID of the operation whose replay ctx belongs to.
// The second result is false outside a replay.
func OperationID(ctx context.Context) (string, bool) {
	st := stateFrom(ctx)
	if st == nil || st.replay == nil {
		return "", false
	}
	return st.replay.id, true
}

// stateKey is the context key of a request's requestState.
type stateKey struct{}

// requestState travels in the context of every request that passes through
// a Middleware's Handler, on first arrival and on replay.
type requestState struct {
	m *Middleware

	// On first arrival:
	original *http.Request  // as it reached the outer Handler
	body     *recordingBody // nil when the request has no body
	writer   *trackingWriter
	answered bool // Defer has answered the request

	// On replay:
	replay *replayState
}

// replayState is what a replay's handler tells the Middleware through its
// context.
type replayState struct {
	id      string
	failure *backend.Failure // set by Fail
}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return st
}
