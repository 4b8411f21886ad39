package benchutil

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asyncreply/asyncreply/bench/load"
)

// Receiver is the webhook receiver of the harness's delivery measures. It
// verifies nothing (a receiver's check of the signature is its own cost,
// not the sender's) and answers 204, counting the distinct events it was
// sent, the copies of one it had already, and how long each event came
// after the transition it tells of (its time, the operation's completion).
// The same machine's clock stamps both, so the difference is the
// delivery's lag.
type Receiver struct {
	mu         sync.Mutex
	seen       map[string]bool
	received   atomic.Int64
	duplicates atomic.Int64
	lag        *load.Histogram
}

// NewReceiver returns a Receiver that has received nothing.
func NewReceiver() *Receiver {
	return &Receiver{seen: map[string]bool{}, lag: load.NewHistogram()}
}

// maxEvent bounds an event's body: the harness's are well under it.
const maxEvent = 1 << 20

// ServeHTTP answers a POST of a CloudEvent (JSON, with its id and time)
// with 204, and anything else with 400 or 405, so that a delivery the
// harness counts is one that carried an event.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	at := time.Now()
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST an event", http.StatusMethodNotAllowed)
		return
	}
	var ev struct {
		ID   string    `json:"id"`
		Time time.Time `json:"time"`
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxEvent))
	if err == nil {
		err = json.Unmarshal(body, &ev)
	}
	if err != nil || ev.ID == "" || ev.Time.IsZero() {
		http.Error(w, "not a CloudEvent with an id and a time", http.StatusBadRequest)
		return
	}
	r.Record(ev.ID, at.Sub(ev.Time))
	w.WriteHeader(http.StatusNoContent)
}

// Record counts the event id, which came lag after its transition; a copy
// of an event already counted is counted apart, its lag left out.
func (r *Receiver) Record(id string, lag time.Duration) {
	r.mu.Lock()
	dup := r.seen[id]
	r.seen[id] = true
	r.mu.Unlock()
	if dup {
		r.duplicates.Add(1)
		return
	}
	r.received.Add(1)
	r.lag.Record(max(lag, 0))
}

// Received is the distinct events received so far.
func (r *Receiver) Received() int64 { return r.received.Load() }

// Stats is what a Receiver has received so far, as a receiver process
// serves it.
func (r *Receiver) Stats() ReceiverStats {
	return ReceiverStats{
		Received: r.received.Load(), Duplicates: r.duplicates.Load(),
		P50: r.lag.Quantile(0.5), P99: r.lag.Quantile(0.99), Max: r.lag.Max(),
	}
}

// ReceiverStats are the distinct events received, the copies of events
// already received, and the quantiles of the distinct ones' lags.
type ReceiverStats struct {
	Received, Duplicates int64
	P50, P99, Max        time.Duration
}
