package asyncreply

import (
	"net/http"
	"strconv"

	"github.com/asyncreply/asyncreply/backend"
)

// problem is an RFC 9457 problem details document.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func problemFromFailure(f *backend.Failure) *problem {
	if f == nil {
		return &problem{Type: "about:blank", Title: http.StatusText(http.StatusInternalServerError), Status: http.StatusInternalServerError}
	}
	return &problem{Type: "about:blank", Title: f.Title, Status: f.Status, Detail: f.Detail}
}

// writeProblem answers with an application/problem+json document. Details
// are written for clients: never a Go error string that leaks internals.
func writeProblem(w http.ResponseWriter, status int, title, detail string) {
	writeProblemDoc(w, &problem{Type: "about:blank", Title: title, Status: status, Detail: detail})
}

func writeProblemDoc(w http.ResponseWriter, p *problem) {
	body := p.appendJSON(make([]byte, 0, 256))
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Encoding")
	w.WriteHeader(p.Status)
	w.Write(body)
}

// writeUnavailable answers 503 for a store outage: the client may retry, and
// nothing was acknowledged.
func writeUnavailable(w http.ResponseWriter, retryAfter string) {
	w.Header().Set("Retry-After", retryAfter)
	writeProblem(w, http.StatusServiceUnavailable, "Service Unavailable",
		"Operations cannot be stored or read right now. Retry later.")
}

func writeNotFound(w http.ResponseWriter) {
	writeProblem(w, http.StatusNotFound, "Operation not found",
		"No operation with this ID exists for you: it never did, it expired, or it was deleted.")
}
