package asyncreply

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// serveMonitor serves the monitor resources under Config.Prefix: rest is
// the path after the prefix, "<id>", "<id>/response", "<id>/status" or
// "<id>/events".
func (m *Middleware) serveMonitor(w http.ResponseWriter, r *http.Request, rest string) {
	switch rest {
	case "":
		m.serveList(w, r)
		return
	case "healthz":
		m.serveHealth(w, r, false)
		return
	case "readyz":
		m.serveHealth(w, r, true)
		return
	case "events":
		m.serveFeed(w, r)
		return
	}
	id, resource, _ := strings.Cut(rest, "/")
	if !validID(id) {
		writeNotFound(w)
		return
	}
	switch resource {
	case "":
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			m.servePoll(w, r, id)
		case http.MethodDelete:
			m.serveDelete(w, r, id)
		default:
			writeMethodNotAllowed(w, "GET, HEAD, DELETE")
		}
	case "response":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeMethodNotAllowed(w, "GET, HEAD")
			return
		}
		m.serveResponse(w, r, id)
	case "status":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeMethodNotAllowed(w, "GET, HEAD")
			return
		}
		m.serveStatus(w, r, id)
	case "events":
		if r.Method != http.MethodGet {
			writeMethodNotAllowed(w, "GET")
			return
		}
		m.serveEvents(w, r, id)
	default:
		writeNotFound(w)
	}
}

// servePoll answers a poll: 202 while the operation runs (after waiting up
// to Prefer: wait=N for it to finish), 303 to the response once it
// succeeded, the failure a synchronous caller would have seen once it failed.
func (m *Middleware) servePoll(w http.ResponseWriter, r *http.Request, id string) {
	op, ok := m.poll(w, r, id)
	if !ok {
		return
	}
	m.writePollAnswer(w, r, op)
}

// writePollAnswer answers with where op stands, as a poll of its monitor URL
// does: 202 with the monitor URL while it runs, 303 to the response once it
// succeeded, the failure a synchronous caller would have seen once it failed.
func (m *Middleware) writePollAnswer(w http.ResponseWriter, r *http.Request, op *backend.Operation) {
	links := m.monitorURLs(r, op.ID)
	switch op.Status {
	case backend.Succeeded:
		if !m.readable(w, op) {
			return
		}
		w.Header().Set("Location", links.Response)
		m.writeStatus(w, r, op, links, http.StatusSeeOther)
	case backend.Failed:
		m.writeFailure(w, r, op)
	case backend.Canceled:
		writeNotFound(w)
	default:
		h := w.Header()
		h.Set("Location", links.Self)
		h.Set("Operation-Location", links.status())
		m.writeStatus(w, r, op, links, http.StatusAccepted)
	}
}

// poll returns the operation a poll asks for, after waiting, when it asks
// with Prefer: wait=N, up to N seconds (at most MaxWait) for it to finish.
// It answers the poll itself and returns false when the operation is not
// the requester's to see, or no more waits may be open (Config.MaxWatches).
func (m *Middleware) poll(w http.ResponseWriter, r *http.Request, id string) (*backend.Operation, bool) {
	op, ok := m.lookup(w, r, id)
	if !ok {
		return nil, false
	}
	prefs := parsePrefer(r.Header)
	if !prefs.hasWait || op.Status.Done() {
		return op, true
	}
	w.Header().Add("Vary", "Prefer")
	release, ok := m.openWatch(w, op.Owner)
	if !ok {
		return op, false
	}
	defer release()
	if latest, err := m.waitDone(r.Context(), op, min(prefs.wait, m.cfg.MaxWait)); err == nil {
		op = latest
	}
	return op, true
}

// serveStatus answers the Operation-Location monitor: 200 and the status
// document whatever the operation's state, never a redirect, for the pollers
// (Azure's SDKs) that read a 303 after a GET as a failure. Prefer: wait=N
// long-polls as on the monitor URL.
func (m *Middleware) serveStatus(w http.ResponseWriter, r *http.Request, id string) {
	op, ok := m.poll(w, r, id)
	if !ok {
		return
	}
	if op.Status == backend.Succeeded && !m.readable(w, op) {
		return
	}
	links := m.monitorURLs(r, id)
	if !op.Status.Done() {
		w.Header().Set("Retry-After", m.retryAfter)
	}
	m.writeJSONStatus(w, r, op, links, http.StatusOK)
}

// serveResponse serves the stored response verbatim, with the headers that
// keep it out of caches once deleted (writeResponse), or the failure.
func (m *Middleware) serveResponse(w http.ResponseWriter, r *http.Request, id string) {
	if ctx, span := m.startCollect(r, id); span != nil {
		status := &statusWriter{ResponseWriter: w}
		w, r = status, r.WithContext(ctx)
		defer func() { endHTTPSpan(span, status.status); span.End() }()
	}
	op, ok := m.lookup(w, r, id)
	if !ok {
		return
	}
	if !op.Status.Done() {
		writeProblem(w, http.StatusNotFound, "Response not ready",
			"The operation has not finished yet; poll its status URL until it redirects here.")
		return
	}
	m.writeOutcome(w, r, op, true)
}

// serveDelete cancels and forgets the operation: a running handler's context
// is canceled, the stored response is dropped, and later requests get 404.
func (m *Middleware) serveDelete(w http.ResponseWriter, r *http.Request, id string) {
	if _, ok := m.lookup(w, r, id); !ok {
		return
	}
	ctx, cancel := storeContext(r.Context())
	defer cancel()
	err := m.cfg.Backend.Cancel(ctx, id, m.cfg.now())
	switch {
	case errors.Is(err, backend.ErrNotFound):
		writeNotFound(w)
	case err != nil:
		m.cfg.Logger.Error("asyncreply: canceling an operation failed", "operation", id, "error", err)
		writeUnavailable(w, m.retryAfter)
	default:
		m.cfg.Logger.Info("asyncreply: operation deleted", "operation", id)
		w.WriteHeader(http.StatusNoContent)
	}
}

// writeFinished answers the request that submitted op, finished within the
// wait it allowed, as a synchronous request would have had it: the stored
// response exactly as the application gave it (Vary: Prefer added by the
// caller, and no Expires or Cache-Control of the /response resource, since
// this is the application's own URL), or the failure. It counts as the
// response's first read: its Set-Cookie is delivered here, not again.
func (m *Middleware) writeFinished(w http.ResponseWriter, r *http.Request, op *backend.Operation) {
	m.writeOutcome(w, r, op, false)
}

// writeOutcome writes a done operation's outcome: the stored response (as
// the /response resource when atMonitor), or the failure.
func (m *Middleware) writeOutcome(w http.ResponseWriter, r *http.Request, op *backend.Operation, atMonitor bool) {
	switch op.Status {
	case backend.Succeeded:
		m.writeResponse(w, r, op, atMonitor)
	case backend.Failed:
		m.writeFailure(w, r, op)
	default: // canceled: gone
		writeNotFound(w)
	}
}

// writeResponse writes op's stored response verbatim, but for its
// Set-Cookie, which only the response's first read carries
// (deliversCookies). At the monitor's /response (atMonitor) it adds Expires,
// when the response will be deleted, and the Cache-Control of
// responseCacheControl; and the answer to a HEAD request is served as one,
// its status and headers without a body, and without the Content-Length
// that would promise one to the GET of a client following the 303.
func (m *Middleware) writeResponse(w http.ResponseWriter, r *http.Request, op *backend.Operation, atMonitor bool) {
	plain, err := m.sealer.open(op.ID, op.Response)
	var stored *storedResponse
	if err == nil {
		stored, err = unmarshalStoredResponse(plain)
	}
	if err != nil {
		m.writeUnreadable(w, op, err)
		return
	}
	if atMonitor {
		m.linkCollected(r.Context(), stored.Trace)
	}
	withCookies, err := m.deliversCookies(r.Context(), op, stored)
	switch {
	case errors.Is(err, backend.ErrNotFound): // deleted or swept meanwhile
		writeNotFound(w)
		return
	case err != nil && atMonitor:
		m.cfg.Logger.Error("asyncreply: marking a response collected failed", "operation", op.ID, "error", err)
		writeUnavailable(w, m.retryAfter)
		return
	case err != nil:
		// Answered 503, the submitting client would submit again; with 202
		// it collects the response, cookies and all, once the store answers.
		m.cfg.Logger.Warn("asyncreply: marking a response collected failed; answering 202", "operation", op.ID, "error", err)
		m.writeAccepted(w, r, op, false)
		return
	}
	h := w.Header()
	for name, values := range stored.Header {
		switch name {
		case "Set-Cookie":
			if withCookies {
				// The application's middleware may have set cookies on
				// this answer already, on the submitting request.
				h[name] = append(h[name], values...)
			}
		case "Vary": // set by us on an answer within Prefer: wait
			h[name] = append(h[name], values...)
		default:
			h[name] = values
		}
	}
	if atMonitor {
		h.Set("Expires", expiresHeader(op.ExpiresAt))
		h["Cache-Control"] = m.responseCacheControl(stored.Header["Cache-Control"])
		if stored.Head {
			h.Del("Content-Length")
		}
	}
	w.WriteHeader(stored.StatusCode)
	if r.Method != http.MethodHead && !stored.Head {
		w.Write(stored.Body)
	}
}

// writeFailure answers with the status a synchronous caller would have seen:
// problem details, or an error page for browsers.
func (m *Middleware) writeFailure(w http.ResponseWriter, r *http.Request, op *backend.Operation) {
	p := problemFromFailure(op.Failure)
	if !op.ExpiresAt.IsZero() {
		w.Header().Set("Expires", expiresHeader(op.ExpiresAt))
	}
	if prefersHTML(r) {
		m.writeWaitingPage(w, r, op, p.Status)
		return
	}
	writeProblemDoc(w, p)
}

// serveHealth answers Prefix+"healthz" (the process serves) and
// Prefix+"readyz" (it can also reach its backend: a lookup of an ID that
// cannot exist answers "not found" only when the store does). Neither
// collides with an operation ID, which is always 22 characters long.
func (m *Middleware) serveHealth(w http.ResponseWriter, r *http.Request, ready bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeMethodNotAllowed(w, "GET, HEAD")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if m.shuttingDown() {
		writeProblem(w, http.StatusServiceUnavailable, "Shutting down", "The server is shutting down.")
		return
	}
	if ready {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := m.cfg.Backend.Get(ctx, "readyz"); !errors.Is(err, backend.ErrNotFound) {
			m.cfg.Logger.Warn("asyncreply: readiness check: backend unreachable", "error", err)
			writeUnavailable(w, m.retryAfter)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write([]byte("ok\n"))
	}
}

func writeMethodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeProblem(w, http.StatusMethodNotAllowed, "Method Not Allowed", "This resource allows "+allow+".")
}

// expiresHeader formats t for the Expires header.
func expiresHeader(t time.Time) string { return t.UTC().Format(http.TimeFormat) }
