package asyncreply

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/jsonenc"
)

// serveList answers GET Prefix: the caller's own operations, newest first,
// as Google AIP-151's ListOperations does — {"operations": [status
// documents], "nextPageToken": "…"} — filtered with ?status= (repeatable, or
// comma-separated), ?createdAfter= and ?createdBefore= (RFC 3339), and paged
// with ?pageSize= (at most backend.MaxPageSize) and ?pageToken=. A browser
// (prefersHTML) gets the same page as HTML: listPage.
//
// It exists only where operations are owner-bound (Config.Owner): without
// an owner there is no "own", and a list of everyone's operations would hand
// out every unguessable URL, so it is a 404, as it is for a requester whose
// owner cannot be told. A backend that does not list (backend.Lister)
// answers 501.
func (m *Middleware) serveList(w http.ResponseWriter, r *http.Request) {
	if m.cfg.Owner == nil {
		writeNotFound(w) // what any unknown monitor URL answers: nothing is here
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeMethodNotAllowed(w, "GET, HEAD")
		return
	}
	owner, err := m.owner(r)
	if err != nil {
		writeProblem(w, http.StatusNotFound, "Not Found", "The request's credentials do not identify whose operations to list.")
		return
	}
	q, page, ok := m.listOrAnswer(w, r, backend.ListQuery{Owner: owner})
	if !ok {
		return
	}
	if prefersHTML(r) {
		m.writeListPage(w, r, q, page)
		return
	}
	body := []byte(`{"operations":[`)
	for i, op := range page.Operations {
		if i > 0 {
			body = append(body, ',')
		}
		body = newStatusDocument(op, m.monitorURLs(r, op.ID)).appendJSON(body)
	}
	body = append(body, ']')
	if page.NextPageToken != "" {
		body = append(body, `,"nextPageToken":`...)
		body = jsonenc.AppendString(body, page.NextPageToken)
	}
	body = append(body, '}')
	w.Header().Set("X-Content-Type-Options", "nosniff")
	writeJSON(w, r, http.StatusOK, body)
}

// listOrAnswer lists what r's query parameters select within scope (its
// Owner, or AnyOwner), and returns the query with the page, or answers the
// request itself when there is none: 501 without a backend that lists,
// 400 for a bad query or a page token of another query, 503 when the store
// cannot be read.
func (m *Middleware) listOrAnswer(w http.ResponseWriter, r *http.Request, scope backend.ListQuery) (backend.ListQuery, backend.ListPage, bool) {
	if m.lister == nil {
		writeProblem(w, http.StatusNotImplemented, "Listing not supported", "This server's backend does not list operations.")
		return scope, backend.ListPage{}, false
	}
	q, err := listQuery(r)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "Bad list query", err.Error())
		return q, backend.ListPage{}, false
	}
	q.Owner, q.AnyOwner, q.Now = scope.Owner, scope.AnyOwner, m.cfg.now()
	ctx, cancel := storeContext(r.Context())
	defer cancel()
	page, err := m.lister.List(ctx, q)
	switch {
	case errors.Is(err, backend.ErrBadPageToken):
		writeProblem(w, http.StatusBadRequest, "Bad page token",
			"The pageToken is not one this list returned for the same query. Start again without it.")
		return q, page, false
	case err != nil:
		m.cfg.Logger.Error("asyncreply: listing operations failed", "any_owner", q.AnyOwner, "error", err)
		writeUnavailable(w, m.retryAfter)
		return q, page, false
	}
	return q, page, true
}

// listQuery reads a list request's query parameters; the error says what
// to fix.
func listQuery(r *http.Request) (backend.ListQuery, error) {
	var q backend.ListQuery
	params := r.URL.Query()
	for _, v := range params["status"] {
		for name := range strings.SplitSeq(v, ",") {
			switch s := backend.Status(strings.TrimSpace(name)); s {
			case backend.NotStarted, backend.Running, backend.Succeeded, backend.Failed:
				q.Statuses = append(q.Statuses, s)
			default:
				return q, errors.New("status must be NotStarted, Running, Succeeded or Failed, got " + strconv.Quote(name))
			}
		}
	}
	if v := params.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > backend.MaxPageSize {
			return q, errors.New("pageSize must be a whole number from 1 to " + strconv.Itoa(backend.MaxPageSize))
		}
		q.PageSize = n
	}
	q.PageToken = params.Get("pageToken")
	for _, bound := range []struct {
		name string
		t    *time.Time
	}{{"createdAfter", &q.CreatedAfter}, {"createdBefore", &q.CreatedBefore}} {
		if v := params.Get(bound.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return q, errors.New(bound.name + " must be an RFC 3339 time, e.g. 2026-12-01T20:00:00Z")
			}
			*bound.t = t
		}
	}
	return q, nil
}
