package asyncreply

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/asyncreply/asyncreply/backend"
)

// AdminHandler serves the operator's dashboard and its API, for an
// operator listener: never mount it on the handler clients reach, since it
// shows and acts on every owner's operations. It serves, at paths relative
// to where it is mounted (it works under http.StripPrefix, and its page
// links relatively):
//
//	GET  /                              the dashboard page
//	GET  /api/summary                   what the page shows, as JSON
//	GET  /api/operations                every owner's operations, paged
//	POST /api/operations/{id}/cancel    cancel and forget an operation
//	POST /api/operations/{id}/rerun     run a pending operation's request again
//	GET  /metrics                       MetricsHandler
//
// The page shows the store's operations by status, this process's submits
// and completions over the last minute, the queue-wait, run and end-to-end
// durations since this process started (mean, and p50/p95 estimated from
// the histogram's buckets), replays and watches open, the operations
// waiting or running (the newest 50) with their progress, attempts and
// age, and the newest 20 failures with their problem details. It is
// rendered on the server, and readable and usable without JavaScript:
// its buttons are HTML forms that post to the API, which answers a form
// with 303 back to the page. With JavaScript it polls GET /api/summary
// every 2 seconds and updates itself. Without a backend that lists
// (backend.Lister), it shows what the metrics know and says that listing
// is unavailable, and GET /api/operations answers 501.
//
// GET /api/operations takes the parameters of the caller's own list
// (status, createdAfter, createdBefore, pageSize, pageToken) and answers
// {"operations": [...], "nextPageToken": "..."} across every owner, each
// operation with its owner's digest, attempts, progress and failure.
//
// Cancel is what a client's DELETE does: the operation is canceled,
// forgotten, and a running replay's context canceled; 204. Rerun creates a
// new operation, with a new ID, of the same owner, timeout and retention,
// from the recorded request, and answers 201 with it. A backend drops the
// recorded request, with its credentials, when an operation finishes, so
// only an operation that has not finished can be re-run: a finished one is
// answered 409. The new operation has no Idempotency-Key: the client's
// retries still find the original.
//
// AdminHandler does not authenticate: whoever reaches it may act on every
// operation, so the listener it is on must be the operator's alone, or
// guarded in front of it (the asyncreply command's --admin-token). It does
// refuse cross-origin POSTs (http.CrossOriginProtection: by Sec-Fetch-Site,
// or Origin against Host), answered 403: a browser with the operator's
// credentials — a cookie, Basic auth, or only a loopback address — can
// otherwise be made to post a form from any site. Requests from outside a
// browser send neither header and are let through, so curl and scripts
// with a bearer token work unchanged. No per-page token is needed for
// that: every browser that runs the page sends one of the two headers.
// What a same-origin check cannot stop is DNS rebinding, which makes
// another site's page same-origin with a listener that answers any Host:
// so a listener without authentication is safe only where no browser
// can reach it.
//
// Errors are application/problem+json.
func (m *Middleware) AdminHandler() http.Handler {
	sameOrigin := http.NewCrossOriginProtection()
	sameOrigin.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusForbidden, "Cross-origin request refused",
			"The dashboard's actions may be posted only from its own page.")
	}))
	metrics := m.MetricsHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		switch path {
		case "/":
			if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
				return
			}
			m.serveDashboard(w, r)
			return
		case "/metrics":
			if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
				return
			}
			metrics.ServeHTTP(w, r)
			return
		case "/api/summary":
			if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
				return
			}
			writeAdminJSON(w, r, http.StatusOK, m.summary(r.Context()))
			return
		case "/api/operations":
			if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
				return
			}
			m.serveAdminList(w, r)
			return
		}
		rest, ok := strings.CutPrefix(path, "/api/operations/")
		id, action, _ := strings.Cut(rest, "/")
		if !ok || !validID(id) || (action != "cancel" && action != "rerun") {
			writeProblem(w, http.StatusNotFound, "Not Found", "The dashboard has no resource at this path.")
			return
		}
		if !allowMethods(w, r, http.MethodPost) {
			return
		}
		sameOrigin.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if action == "cancel" {
				m.serveAdminCancel(w, r, id)
			} else {
				m.serveAdminRerun(w, r, id)
			}
		})).ServeHTTP(w, r)
	})
}

// allowMethods answers 405 and returns false unless r's method is one of
// methods.
func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, method := range methods {
		if r.Method == method {
			return true
		}
	}
	writeMethodNotAllowed(w, strings.Join(methods, ", "))
	return false
}

// serveAdminList answers GET /api/operations: every owner's operations,
// newest first, with the parameters of the caller's own list.
func (m *Middleware) serveAdminList(w http.ResponseWriter, r *http.Request) {
	q, page, ok := m.listOrAnswer(w, r, backend.ListQuery{AnyOwner: true})
	if !ok {
		return
	}
	list := struct {
		Operations    []adminOperation `json:"operations"`
		NextPageToken string           `json:"nextPageToken,omitempty"`
	}{Operations: make([]adminOperation, len(page.Operations)), NextPageToken: page.NextPageToken}
	for i, op := range page.Operations {
		list.Operations[i] = newAdminOperation(op, q.Now)
	}
	writeAdminJSON(w, r, http.StatusOK, list)
}

// serveAdminCancel answers POST /api/operations/{id}/cancel.
func (m *Middleware) serveAdminCancel(w http.ResponseWriter, r *http.Request, id string) {
	ctx, cancel := storeContext(r.Context())
	defer cancel()
	if _, ok := m.getLive(ctx, w, id); !ok {
		return
	}
	err := m.cfg.Backend.Cancel(ctx, id, m.cfg.now())
	switch {
	case errors.Is(err, backend.ErrNotFound):
		writeNotFound(w)
	case err != nil:
		m.cfg.Logger.Error("asyncreply: canceling an operation from the dashboard failed", "operation", id, "error", err)
		writeUnavailable(w, m.retryAfter)
	default:
		m.cfg.Logger.Info("asyncreply: operation canceled by an operator", "operation", id)
		if postedForm(r) {
			redirectToDashboard(w, "canceled", id)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// serveAdminRerun answers POST /api/operations/{id}/rerun.
func (m *Middleware) serveAdminRerun(w http.ResponseWriter, r *http.Request, id string) {
	if m.shuttingDown() {
		w.Header().Set("Retry-After", m.retryAfter)
		writeProblem(w, http.StatusServiceUnavailable, "Shutting down", "The server is shutting down and accepts no new operations. Retry later.")
		return
	}
	ctx, cancel := storeContext(r.Context())
	defer cancel()
	op, ok := m.getLive(ctx, w, id)
	if !ok {
		return
	}
	if op.Status.Done() || op.Request == nil {
		writeProblem(w, http.StatusConflict, "Operation finished",
			"The recorded request is dropped when an operation finishes, with its credentials, so a finished operation cannot be re-run.")
		return
	}
	plain, err := m.sealer.open(op.ID, op.Request)
	if err != nil {
		m.cfg.Logger.Error("asyncreply: recorded request cannot be decrypted with the configured key", "operation", op.ID)
		writeProblem(w, http.StatusInternalServerError, "Recorded request unreadable", "The recorded request could not be read back.")
		return
	}
	now := m.cfg.now()
	newID := newID()
	again := &backend.Operation{
		ID:        newID,
		Owner:     op.Owner,
		Status:    backend.NotStarted,
		Request:   m.sealer.seal(newID, plain),
		Timeout:   op.Timeout,
		Retention: op.Retention,
		CreatedAt: now,
		UpdatedAt: now,
	}
	stored, _, err := m.cfg.Backend.Create(ctx, again)
	switch {
	case errors.Is(err, backend.ErrOwnerQueueFull):
		m.refuseQueued(w, r, http.StatusTooManyRequests, err,
			"The operation's owner has as many operations waiting to run as one caller may. Retry once some have started.")
		return
	case errors.Is(err, backend.ErrQueueFull):
		m.refuseQueued(w, r, http.StatusServiceUnavailable, err,
			"The server has as many operations waiting to run as it holds. Retry later.")
		return
	case err != nil:
		m.cfg.Logger.Error("asyncreply: storing a re-run failed", "operation", id, "error", err)
		writeUnavailable(w, m.retryAfter)
		return
	}
	m.cfg.Logger.Info("asyncreply: operation re-run by an operator", "operation", newID, "rerun_of", id)
	if m.cfg.Inline {
		// No worker runs Inline operations; the submit's request does,
		// and here that is this one.
		m.execute(context.WithoutCancel(r.Context()), newID)
		if latest, err := m.cfg.Backend.Get(ctx, newID); err == nil {
			stored = latest
		}
	}
	if postedForm(r) {
		redirectToDashboard(w, "rerun", newID)
		return
	}
	writeAdminJSON(w, r, http.StatusCreated, struct {
		adminOperation
		RerunOf string `json:"rerunOf"`
	}{newAdminOperation(stored, m.cfg.now()), id})
}

// postedForm reports whether r is an HTML form's submission, which is
// answered with the dashboard rather than JSON.
func postedForm(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/x-www-form-urlencoded") || strings.HasPrefix(ct, "multipart/form-data")
}

// redirectToDashboard answers a form's post with 303 to the dashboard,
// saying what was done. The Location is relative to the action's path,
// /api/operations/{id}/{action}, so that it lands where the dashboard is
// mounted, whatever prefix was stripped on the way.
func redirectToDashboard(w http.ResponseWriter, done, id string) {
	w.Header().Set("Location", "../../../?"+done+"="+id)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
}

// writeAdminJSON answers with v as JSON, never cached.
func writeAdminJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "Internal Server Error", "The answer could not be encoded.")
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	writeJSON(w, r, code, body)
}
