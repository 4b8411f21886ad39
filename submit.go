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
	"strconv"

	"github.com/asyncreply/asyncreply/backend"
)

// maxIdempotencyKey bounds the Idempotency-Key header; keys are usually UUIDs.
const maxIdempotencyKey = 255

// submit turns the request into an operation and answers it: 202 Accepted
// with the monitor URL, or the final response when it is ready within the
// wait the client or the configuration allows. It reports whether it
// answered; it answers nothing only when the handler has already started a
// response, which it cannot take back.
func (m *Middleware) submit(w http.ResponseWriter, r *http.Request, st *requestState, opts RouteOptions) bool {
	if st.answered {
		return true
	}
	if st.writer.wroteHeader {
		m.cfg.Logger.Error("asyncreply: Defer called after the handler started its response; running synchronously",
			"method", r.Method, "path", r.URL.Path)
		return false
	}
	st.answered = true
	m.accept(w, st, opts)
	return true
}

func (m *Middleware) accept(w http.ResponseWriter, st *requestState, opts RouteOptions) {
	r := st.original
	if m.closing.Load() {
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
	key := r.Header.Get("Idempotency-Key")
	if len(key) > maxIdempotencyKey {
		writeProblem(w, http.StatusBadRequest, "Idempotency-Key too long",
			fmt.Sprintf("The Idempotency-Key header must be at most %d bytes.", maxIdempotencyKey))
		return
	}
	var body []byte
	if st.body != nil {
		body, err = st.body.finish()
		if errors.Is(err, errBodyTooLarge) {
			writeProblem(w, http.StatusRequestEntityTooLarge, "Request body too large",
				fmt.Sprintf("An asynchronous request's body may be at most %d bytes.", m.cfg.MaxRequestBytes))
			return
		}
		if err != nil {
			writeProblem(w, http.StatusBadRequest, "Request body unreadable", "The request body could not be read completely.")
			return
		}
	}
	recorded := recordedRequest{
		Method:     r.Method,
		RequestURI: r.RequestURI,
		Host:       r.Host,
		RemoteAddr: r.RemoteAddr,
		TLS:        r.TLS != nil,
		Header:     r.Header,
		Body:       body,
	}
	if recorded.RequestURI == "" { // a request built in a test, not read from a connection
		recorded.RequestURI = r.URL.RequestURI()
	}

	now := m.cfg.now()
	id := newID()
	op := &backend.Operation{
		ID:             id,
		Owner:          owner,
		IdempotencyKey: key,
		Status:         backend.NotStarted,
		Request:        m.sealer.seal(id, recorded.marshal()),
		Timeout:        cmp.Or(opts.Timeout, m.cfg.Timeout),
		Retention:      cmp.Or(opts.Retention, m.cfg.Retention),
		CreatedAt:      now,
		UpdatedAt:      now,
	}
	if key != "" {
		op.Fingerprint = fingerprint(&recorded)
	}
	ctx, cancel := storeContext(r.Context())
	stored, created, err := m.cfg.Backend.Create(ctx, op)
	cancel()
	switch {
	case errors.Is(err, backend.ErrOwnerQueueFull):
		m.cfg.Logger.Warn("asyncreply: an owner has too many operations waiting to run; answering 429", "method", r.Method, "path", r.URL.Path, "error", err)
		w.Header().Set("Retry-After", m.retryAfter)
		writeProblem(w, http.StatusTooManyRequests, "Too many operations waiting",
			"You have as many operations waiting to run as one caller may; this one was not accepted. Retry once some have started.")
		return
	case errors.Is(err, backend.ErrQueueFull):
		m.cfg.Logger.Warn("asyncreply: too many operations waiting to run; answering 503", "method", r.Method, "path", r.URL.Path, "error", err)
		w.Header().Set("Retry-After", m.retryAfter)
		writeProblem(w, http.StatusServiceUnavailable, "Too many operations waiting",
			"The server has as many operations waiting to run as it holds; this one was not accepted. Retry later.")
		return
	case err != nil:
		m.cfg.Logger.Error("asyncreply: storing an operation failed; answering 503", "method", r.Method, "path", r.URL.Path, "error", err)
		writeUnavailable(w, m.retryAfter)
		return
	}
	if !created && !bytes.Equal(stored.Fingerprint, op.Fingerprint) {
		writeProblem(w, http.StatusUnprocessableEntity, "Idempotency-Key reused",
			"This Idempotency-Key was already used for a different request.")
		return
	}
	if created {
		m.cfg.Logger.Info("asyncreply: operation accepted", "operation", id, "method", r.Method, "path", r.URL.Path)
	}

	prefs := parsePrefer(r.Header)
	wait := cmp.Or(opts.Wait, m.cfg.Wait)
	switch {
	case prefs.hasWait:
		wait = min(prefs.wait, m.cfg.MaxWait)
	case prefs.respondAsync:
		wait = 0
	}
	if created && m.cfg.Inline {
		m.execute(context.WithoutCancel(r.Context()), id)
		ctx, cancel := storeContext(r.Context())
		if latest, err := m.cfg.Backend.Get(ctx, id); err == nil {
			stored = latest
		}
		cancel()
	}
	if wait > 0 {
		if latest, err := m.waitDone(r.Context(), stored, wait); err == nil {
			stored = latest
		}
		if stored.Status.Done() {
			// Ready in time: answer as a synchronous request would have.
			w.Header().Add("Vary", "Prefer")
			m.writeFinished(w, r, stored)
			return
		}
	}
	m.writeAccepted(w, r, stored, prefs.respondAsync)
}

// writeAccepted answers 202 Accepted for op.
func (m *Middleware) writeAccepted(w http.ResponseWriter, r *http.Request, op *backend.Operation, respondAsync bool) {
	links := m.monitorURLs(r, op.ID)
	h := w.Header()
	h.Set("Location", links.Self)
	h.Add("Vary", "Prefer")
	if respondAsync {
		h.Set("Preference-Applied", "respond-async")
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
	h.Set("Cache-Control", "no-store")
	h.Add("Vary", "Accept")
	var body []byte
	if prefersHTML(r) {
		h.Set("Content-Type", "text/html; charset=utf-8")
		body = renderWaitingPage(op, m.monitorPath(op.ID), m.retrySeconds)
	} else {
		h.Set("Content-Type", "application/json")
		body = newStatusDocument(op, links).marshal()
	}
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
