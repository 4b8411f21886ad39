package asyncreply

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/asyncreply/asyncreply/backend"
)

// maxIdempotencyKey bounds the Idempotency-Key header; keys are usually UUIDs.
const maxIdempotencyKey = 255

// deferToOperation turns the request into an operation and answers it
// (accept), unless the handler has already started a response, which it
// cannot take back. It reports whether the request has been answered.
func (m *Middleware) deferToOperation(w http.ResponseWriter, r *http.Request, st *requestState, opts RouteOptions) bool {
	if st.answered {
		return true
	}
	if st.writer.wroteHeader {
		m.cfg.Logger.Error("asyncreply: Defer called after the handler started its response; running synchronously",
			"method", r.Method, "path", r.URL.Path)
		return false
	}
	st.answered = true
	m.accept(&submitCounter{ResponseWriter: w, metrics: m.metrics, route: r.Pattern}, st, opts, r.Pattern)
	return true
}

// accept records the request, stores it as an operation and answers it,
// in the submit's span when tracing is on (route is the pattern the
// request matched, "" when unknown).
func (m *Middleware) accept(w http.ResponseWriter, st *requestState, opts RouteOptions, route string) {
	r := st.original
	ctx, span := m.startSubmit(r, route)
	var stored *backend.Operation
	if span != nil {
		status := &statusWriter{ResponseWriter: w}
		w, r = status, r.WithContext(ctx)
		defer func() { endSubmit(span, status.status, stored) }()
	}
	if m.shuttingDown() {
		w.Header().Set("Retry-After", m.retryAfter)
		writeProblem(w, http.StatusServiceUnavailable, "Shutting down", "The server is shutting down and accepts no new operations. Retry later.")
		return
	}
	owner, err := m.owner(r)
	if err != nil {
		m.cfg.Logger.Info("asyncreply: owner of a new operation could not be determined", "error", err)
		writeProblem(w, http.StatusForbidden, "Forbidden", "The request's credentials do not identify who may see the operation.")
		return
	}
	recorded, ok := m.record(w, st)
	if !ok {
		return
	}
	if span != nil {
		submit := span.SpanContext() // for the replay's span, a child of this one
		recorded.Trace = &submit
	}
	var created bool
	stored, created, ok = m.store(w, r, recorded, owner, opts)
	if !ok {
		return
	}
	m.answerSubmit(w, r, stored, created, opts)
}

// record returns the request as it will be replayed, its body read whole,
// or answers the request itself (413, 400) and returns false.
func (m *Middleware) record(w http.ResponseWriter, st *requestState) (*recordedRequest, bool) {
	r := st.original
	var body []byte
	if st.body != nil {
		// A declared length over the limit is refused before a byte is
		// read, so that a client sending Expect: 100-continue is never
		// invited to send it.
		err := errBodyTooLarge
		if r.ContentLength <= m.cfg.MaxRequestBytes {
			body, err = st.body.finish()
		}
		if errors.Is(err, errBodyTooLarge) {
			writeProblem(w, http.StatusRequestEntityTooLarge, "Request body too large",
				fmt.Sprintf("An asynchronous request's body may be at most %d bytes.", m.cfg.MaxRequestBytes))
			return nil, false
		}
		if err != nil {
			writeProblem(w, http.StatusBadRequest, "Request body unreadable", "The request body could not be read completely.")
			return nil, false
		}
	}
	recorded := &recordedRequest{
		Method:     r.Method,
		RequestURI: r.RequestURI,
		Host:       r.Host,
		RemoteAddr: r.RemoteAddr,
		TLS:        r.TLS != nil,
		Header:     recordedHeader(r.Header),
		Body:       body,
	}
	if recorded.RequestURI == "" { // a request built in a test, not read from a connection
		recorded.RequestURI = r.URL.RequestURI()
	}
	return recorded, true
}

// store persists the recorded request as a new operation of owner, or finds
// the one an Idempotency-Key names, and reports whether it created it. It
// answers the request itself (400, 422, 429, 503) and returns false when there
// is no operation to answer with.
func (m *Middleware) store(w http.ResponseWriter, r *http.Request, recorded *recordedRequest, owner string, opts RouteOptions) (*backend.Operation, bool, bool) {
	var callback string // the client's Prefer: callback, when accepted
	key := r.Header.Get("Idempotency-Key")
	if len(key) > maxIdempotencyKey {
		writeProblem(w, http.StatusBadRequest, "Idempotency-Key too long",
			fmt.Sprintf("The Idempotency-Key header must be at most %d bytes.", maxIdempotencyKey))
		return nil, false, false
	}
	now := m.cfg.now()
	id := newID()
	op := &backend.Operation{
		ID:        id,
		Owner:     owner,
		Status:    backend.NotStarted,
		Request:   m.sealer.seal(id, recorded.marshal()),
		Timeout:   cmp.Or(opts.Timeout, m.cfg.Timeout),
		Retention: cmp.Or(opts.Retention, m.cfg.Retention),
		CreatedAt: now,
		UpdatedAt: now,
	}
	op.Targets, callback = m.targets(r, opts)
	if key != "" {
		op.IdempotencyKey = m.idempotencyScope(r) + key
		op.Fingerprint = fingerprint(recorded)
	}
	ctx, cancel := storeContext(r.Context())
	stored, created, err := m.cfg.Backend.Create(ctx, op)
	cancel()
	switch {
	case errors.Is(err, backend.ErrOwnerQueueFull):
		m.refuseQueued(w, r, http.StatusTooManyRequests, err,
			"You have as many operations waiting to run as one caller may; this one was not accepted. Retry once some have started.")
		return nil, false, false
	case errors.Is(err, backend.ErrQueueFull):
		m.refuseQueued(w, r, http.StatusServiceUnavailable, err,
			"The server has as many operations waiting to run as it holds; this one was not accepted. Retry later.")
		return nil, false, false
	case err != nil:
		m.cfg.Logger.Error("asyncreply: storing an operation failed; answering 503", "method", r.Method, "path", r.URL.Path, "error", err)
		writeUnavailable(w, m.retryAfter)
		return nil, false, false
	}
	if !created && !bytes.Equal(stored.Fingerprint, op.Fingerprint) {
		writeProblem(w, http.StatusUnprocessableEntity, "Idempotency-Key reused",
			"This Idempotency-Key was already used for a different request.")
		return nil, false, false
	}
	if created {
		m.cfg.Logger.Info("asyncreply: operation accepted", "operation", id, "method", r.Method, "path", r.URL.Path)
	}
	if callback != "" && slices.Contains(stored.Targets, callback) {
		w.Header().Add("Preference-Applied", "callback")
	}
	return stored, created, true
}

// refuseQueued answers a request the backend refused to store because too
// many operations wait to run (admission control): status is 429 for the
// requester's own bound, 503 for the server's, both with Retry-After.
func (m *Middleware) refuseQueued(w http.ResponseWriter, r *http.Request, status int, err error, detail string) {
	m.cfg.Logger.Info("asyncreply: too many operations waiting to run; refusing a new one",
		"status", status, "method", r.Method, "path", r.URL.Path, "error", err)
	w.Header().Set("Retry-After", m.retryAfter)
	writeProblem(w, status, "Too many operations waiting", detail)
}

// idempotencyScope is what an Idempotency-Key is prefixed with before it
// is stored. Backends scope keys by Owner; without Config.Owner every
// operation has the same one, and a key alone would hand a second client
// sending the same request with the same key the first client's operation —
// its response, Set-Cookie headers and all. So without an owner a key is
// scoped by a digest of the request's credentials (its cookies and
// Authorization): a retry from the same client finds its operation, another
// client's request becomes an operation of its own.
func (m *Middleware) idempotencyScope(r *http.Request) string {
	if m.cfg.Owner != nil {
		return "" // the owner scopes it
	}
	h := sha256.New()
	h.Write([]byte("asyncreply idempotency scope\x00"))
	for _, name := range []string{"Cookie", "Authorization"} {
		for _, v := range r.Header.Values(name) {
			h.Write([]byte(v))
			h.Write([]byte{0})
		}
		h.Write([]byte{1})
	}
	return hex.EncodeToString(h.Sum(nil)[:16]) + " "
}

// answerSubmit answers the request that submitted op: with its answer when
// it is ready within the wait the client or the configuration allows (as a
// synchronous request would have had it), else 202 Accepted. In Inline mode
// op is executed here first, and then answered as its first poll would be
// — 303 to its response — unless the client asked for 202 with Prefer:
// respond-async: the same URLs as the asynchronous mode, with no wait.
func (m *Middleware) answerSubmit(w http.ResponseWriter, r *http.Request, op *backend.Operation, created bool, opts RouteOptions) {
	prefs := parsePrefer(r.Header)
	wait := cmp.Or(opts.Wait, m.cfg.Wait)
	switch {
	case prefs.hasWait:
		wait = min(prefs.wait, m.cfg.MaxWait)
	case prefs.respondAsync:
		wait = 0
	}
	if created && m.cfg.Inline {
		m.execute(context.WithoutCancel(r.Context()), op.ID)
		ctx, cancel := storeContext(r.Context())
		if latest, err := m.cfg.Backend.Get(ctx, op.ID); err == nil {
			op = latest
		}
		cancel()
	}
	if wait > 0 && !op.Status.Done() {
		// A wait past Config.MaxWatches is not refused — the operation is
		// stored — but answered 202 at once.
		if ok, _ := m.watches.acquire(op.Owner); ok {
			if latest, err := m.waitDone(r.Context(), op, wait); err == nil {
				op = latest
			}
			m.watches.release(op.Owner)
		}
	}
	switch {
	case wait > 0 && op.Status.Done():
		// Ready in time: answer as a synchronous request would have.
		w.Header().Add("Vary", "Prefer")
		m.writeFinished(w, r, op)
	case m.cfg.Inline && op.Status.Done() && !prefs.respondAsync:
		w.Header().Add("Vary", "Prefer")
		w.Header().Set("Operation-Location", m.monitorURLs(r, op.ID).status())
		m.writePollAnswer(w, r, op)
	default:
		m.writeAccepted(w, r, op, prefs.respondAsync)
	}
}

// writeAccepted answers 202 Accepted for op.
func (m *Middleware) writeAccepted(w http.ResponseWriter, r *http.Request, op *backend.Operation, respondAsync bool) {
	links := m.monitorURLs(r, op.ID)
	h := w.Header()
	h.Set("Location", links.Self)
	h.Set("Operation-Location", links.status())
	h.Add("Vary", "Prefer")
	if respondAsync {
		h.Add("Preference-Applied", "respond-async")
	}
	m.writeStatus(w, r, op, links, http.StatusAccepted)
}

// writeStatus writes op's status document, or the waiting page for browsers,
// with the given status code.
func (m *Middleware) writeStatus(w http.ResponseWriter, r *http.Request, op *backend.Operation, links monitorURLs, code int) {
	h := w.Header()
	if code == http.StatusAccepted {
		h.Set("Retry-After", m.retryAfter)
	}
	h.Add("Vary", "Accept")
	if prefersHTML(r) {
		m.writeWaitingPage(w, r, op, code)
		return
	}
	m.writeJSONStatus(w, r, op, links, code)
}

// writeJSONStatus writes op's status document with the given status code.
func (m *Middleware) writeJSONStatus(w http.ResponseWriter, r *http.Request, op *backend.Operation, links monitorURLs, code int) {
	doc := newStatusDocument(op, links)
	doc.Callbacks = m.callbackDocs(r.Context(), op)
	writeJSON(w, r, code, doc.marshal())
}

// writeJSON answers with a JSON document of the monitor's own, which no
// cache keeps; a HEAD request gets its headers only.
func writeJSON(w http.ResponseWriter, r *http.Request, code int, body []byte) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// owner returns the digest of the requester's principal, "" without
// Config.Owner. Digests, not principals, are stored, in case an Owner
// function returns a credential itself.
func (m *Middleware) owner(r *http.Request) (string, error) {
	if m.cfg.Owner == nil {
		return "", nil
	}
	principal, err := m.cfg.Owner(r)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte("asyncreply owner\x00" + principal))
	return hex.EncodeToString(sum[:16]), nil
}

// fingerprint identifies a request for Idempotency-Key reuse: the same key
// with a different method, target or body is a different request.
func fingerprint(rr *recordedRequest) []byte {
	h := sha256.New()
	for _, part := range []string{rr.Method, rr.RequestURI} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	h.Write(rr.Body)
	return h.Sum(nil)
}
