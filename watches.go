package asyncreply

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// watches counts the requests holding a connection open while they wait
// for an operation to change — long-polls and event streams — in total and
// per owner, so that no client, and no crowd of them, can make the server
// hold more than Config.MaxWatches of them (each is a connection, a
// goroutine and a backend watch). Health checks and ordinary polls are
// never counted, so they keep answering when the bound is reached.
type watches struct {
	max, maxPerOwner int
	gauge            prometheus.Gauge // asyncreply_watches_open

	mu      sync.Mutex
	open    int
	byOwner map[string]int
}

// acquire counts one more wait for owner ("" when operations are not
// owner-bound, which only the total bounds). It returns false, counting
// nothing, when a bound is reached: perOwner says which.
func (ws *watches) acquire(owner string) (ok, perOwner bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.open >= ws.max {
		return false, false
	}
	if owner != "" {
		if ws.byOwner[owner] >= ws.maxPerOwner {
			return false, true
		}
		if ws.byOwner == nil {
			ws.byOwner = make(map[string]int)
		}
		ws.byOwner[owner]++
	}
	ws.open++
	ws.gauge.Inc()
	return true, false
}

func (ws *watches) release(owner string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.open--
	ws.gauge.Dec()
	if owner != "" {
		if ws.byOwner[owner]--; ws.byOwner[owner] == 0 {
			delete(ws.byOwner, owner) // the map holds only the owners waiting now
		}
	}
}

// openWatch counts a long-poll or event stream for owner and returns the
// function that ends it. Past Config.MaxWatches it answers 503, and past
// Config.MaxWatchesPerOwner 429, both with Retry-After, and returns false.
func (m *Middleware) openWatch(w http.ResponseWriter, owner string) (release func(), ok bool) {
	ok, perOwner := m.watches.acquire(owner)
	if ok {
		return func() { m.watches.release(owner) }, true
	}
	w.Header().Set("Retry-After", m.retryAfter)
	if perOwner {
		writeProblem(w, http.StatusTooManyRequests, "Too many open waits",
			"You have too many long-polls and event streams open at once. Close some, or poll without waiting.")
	} else {
		writeProblem(w, http.StatusServiceUnavailable, "Too many open waits",
			"The server holds as many long-polls and event streams as it may. Retry later, or poll without waiting.")
	}
	m.cfg.Logger.Debug("asyncreply: refused a long-poll or event stream: too many open", "per_owner", perOwner)
	return nil, false
}
