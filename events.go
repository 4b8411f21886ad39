package asyncreply

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"strconv"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// keepAliveInterval is how often an idle event stream sends a comment, so
// that proxies do not cut it for inactivity.
const keepAliveInterval = 15 * time.Second

// serveEvents streams the operation's status document as Server-Sent Events:
// a "status" event now and at every change, ending after the terminal one.
func (m *Middleware) serveEvents(w http.ResponseWriter, r *http.Request, id string) {
	op, ok := m.lookup(w, r, id)
	if !ok {
		return
	}
	// An EventSource reconnects when a stream ends; a 204 is the standard way
	// to tell it to stop, once it has seen the terminal event.
	if op.Status.Done() && r.Header.Get("Last-Event-ID") == eventID(op) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	release, ok := m.openWatch(w, op.Owner)
	if !ok {
		return
	}
	defer release()
	feed, err := m.subscribe(r.Context(), id)
	if err != nil {
		m.cfg.Logger.Error("asyncreply: watching an operation failed", "operation", id, "error", err)
		writeUnavailable(w, m.retryAfter)
		return
	}
	defer feed.stop()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx would otherwise hold events back
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	fmt.Fprintf(w, "retry: %d\n\n", m.cfg.RetryAfter.Milliseconds())

	links := m.monitorURLs(r, id)
	keepAlive := time.NewTicker(keepAliveInterval)
	defer keepAlive.Stop()
	lastSent := ""
	for {
		latest, err := feed.latest()
		switch {
		case errors.Is(err, backend.ErrNotFound):
			return // swept while streaming
		case err != nil:
			m.cfg.Logger.Warn("asyncreply: reading an operation for events failed", "operation", id, "error", err)
		default:
			op = latest
			if eid := eventID(op); eid != lastSent {
				fmt.Fprintf(w, "event: status\nid: %s\ndata: %s\n\n", eid, newStatusDocument(op, links).marshal())
				if err := rc.Flush(); err != nil {
					return
				}
				lastSent = eid
			}
			if op.Status.Done() {
				return
			}
		}
		for woke := feed.wait(nil, keepAlive.C); woke != changed; woke = feed.wait(nil, keepAlive.C) {
			if woke == ended {
				return
			}
			fmt.Fprint(w, ": keep-alive\n\n")
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// eventID identifies one state of an operation, so that a reconnecting
// client can say which it saw last, and a change is never mistaken for a
// repeat, even when the clock has not moved.
func eventID(op *backend.Operation) string {
	message := fnv.New32a()
	message.Write([]byte(op.Progress.Message))
	return strconv.FormatInt(op.UpdatedAt.UnixNano(), 36) + "-" + string(op.Status) + "-" +
		strconv.Itoa(op.Progress.Percent) + "-" + strconv.FormatUint(uint64(message.Sum32()), 36)
}
