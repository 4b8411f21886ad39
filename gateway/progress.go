package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/problem"
)

// progressPath is where, under Config.Prefix, the application reports a
// replay's progress: Prefix + progressPath + token. It cannot be an
// operation's monitor URL: operation IDs are 22 characters long and have
// no slash.
const progressPath = "progress/"

// maxProgressBody bounds a progress report: a percent and a short message.
const maxProgressBody = 4 << 10

// progressBoard holds the capability tokens of this process's running
// replays. A token is 128 bits from crypto/rand, handed to the application
// in ProgressHeader, and valid only while its attempt runs: a report for an
// attempt that ended, or any guess, is answered 410 Gone.
type progressBoard struct {
	mu       sync.Mutex
	attempts map[string]context.Context // token → the replay's context
}

// open registers the replay whose context is ctx and returns its token,
// and the function that ends it.
func (b *progressBoard) open(ctx context.Context) (token string, end func()) {
	token = randomToken()
	b.mu.Lock()
	if b.attempts == nil {
		b.attempts = make(map[string]context.Context)
	}
	b.attempts[token] = ctx
	b.mu.Unlock()
	return token, func() {
		b.mu.Lock()
		delete(b.attempts, token)
		b.mu.Unlock()
	}
}

func (b *progressBoard) attempt(token string) (context.Context, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ctx, ok := b.attempts[token]
	return ctx, ok
}

// progressReport is the body the application POSTs.
type progressReport struct {
	Percent *int   `json:"percent"`
	Message string `json:"message"`
}

// serveProgress answers a progress report: 204 once it is stored (as
// asyncreply.ReportProgress stores it), 410 when the token names no running
// attempt, 400 for a body that is not a report.
func (b *progressBoard) serveProgress(w http.ResponseWriter, r *http.Request, token string) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		problem.Write(w, http.StatusMethodNotAllowed, "Method Not Allowed", "Report progress with POST.")
		return
	}
	ctx, ok := b.attempt(token)
	if !ok {
		problem.Write(w, http.StatusGone, "No such attempt",
			"This progress URL belongs to no running attempt: the replay it was given to has ended.")
		return
	}
	var report progressReport
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxProgressBody))
	if err := dec.Decode(&report); err != nil || report.Percent == nil || dec.More() {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			problem.Write(w, http.StatusRequestEntityTooLarge, "Progress report too large", "A progress report is a percent and a short message.")
			return
		}
		problem.Write(w, http.StatusBadRequest, "Not a progress report", `Send {"percent": 40, "message": "…"} as JSON.`)
		return
	}
	io.Copy(io.Discard, r.Body)
	asyncreply.ReportProgress(ctx, *report.Percent, report.Message)
	w.WriteHeader(http.StatusNoContent)
}

// progressToken returns the token of a request for one of g's progress
// URLs, and whether it is one.
func (g *Gateway) progressToken(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, g.progressPrefix)
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return "", false
	}
	return rest, true
}
