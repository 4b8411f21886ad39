package asyncreply

import (
	"net/http"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/problem"
)

// problemFromFailure is the problem a failed operation is answered with.
func problemFromFailure(f *backend.Failure) *problem.Details {
	if f == nil {
		return problem.New(http.StatusInternalServerError, http.StatusText(http.StatusInternalServerError), "")
	}
	return problem.New(f.Status, f.Title, f.Detail)
}

func writeProblem(w http.ResponseWriter, status int, title, detail string) {
	problem.Write(w, status, title, detail)
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

func writeProblemDoc(w http.ResponseWriter, p *problem.Details) { problem.WriteDetails(w, p) }
