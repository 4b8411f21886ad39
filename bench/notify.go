package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/bench/load"
)

// notifyScenario: the time from a handler's completion to the client
// learning of it, by server-sent events and by long-poll, on each backend.
func notifyScenario(ctx context.Context, e *env) (section, error) {
	s := section{
		title: "3. Completion to notification",
		intro: fmt.Sprintf(`A client submits, subscribes (GET …/events, or GET of the monitor URL
with Prefer: wait=30), and only then is the handler let finish. Measured:
from the time the handler records just before returning to the client
reading the terminal status event, or the 303. In between: storing the
response, the backend's notification, reading the operation back, and
the HTTP answer. %d clients at once.`, notifyClients),
	}
	tbl := &table{header: []string{"backend", "transport", "completions", "p50", "p99", "p99.9", "max"}}
	for _, k := range e.kinds() {
		for _, transport := range []string{"events", "long-poll"} {
			h, err := e.notificationLatency(ctx, k, transport)
			if err != nil {
				return s, fmt.Errorf("%s, %s: %w", k.name, transport, err)
			}
			s.measure(k.name+", "+transport+", p50", float64(h.Quantile(0.5)))
			tbl.rows = append(tbl.rows, []string{k.name, transport, count(int(h.Count())),
				ms(h.Quantile(0.5)), ms(h.Quantile(0.99)), ms(h.Quantile(0.999)), ms(h.Max())})
			if transport != "events" {
				continue
			}
			switch k.name {
			case "memory":
				s.goals = append(s.goals, latencyGoal("completion to SSE event, memory, p99", 10*time.Millisecond, h))
			case "postgres":
				s.goals = append(s.goals, latencyGoal("completion to SSE event, PostgreSQL, p99", 50*time.Millisecond, h))
			}
		}
	}
	s.tables = append(s.tables, tbl)
	return s, nil
}

// notifyClients is how many clients wait for their completions at once.
const notifyClients = 4

func latencyGoal(what string, most time.Duration, h *load.Histogram) goal {
	p99 := h.Quantile(0.99)
	return goal{what: what, target: "≤ " + ms(most), measured: ms(p99), value: float64(p99), met: p99 <= most}
}

// notificationLatency measures opts.notifications completions on a new
// backend of kind k, the client following each with transport.
func (e *env) notificationLatency(ctx context.Context, k kind, transport string) (*load.Histogram, error) {
	gates := newGates()
	be, err := e.open(ctx, k, 0)
	if err != nil {
		return nil, err
	}
	srv, stop, err := serveOn(watchSignal{be, gates.open}, k.durable, longRetention, gates.app())
	if err != nil {
		return nil, err
	}
	defer stop()
	client := newClient(notifyClients)
	defer client.CloseIdleConnections()

	latency := load.NewHistogram()
	res, err := load.Run(ctx, load.Config{
		Concurrency: notifyClients, Requests: e.opts.notifications, Duration: 2 * e.opts.duration,
	}, func(ctx context.Context, seq int) error {
		resp, _, err := get(ctx, client, srv.URL+"/work", http.StatusAccepted)
		if err != nil {
			return err
		}
		monitor := resp.Header.Get("Location")
		id := path.Base(monitor)
		defer gates.forget(id)
		follow := followEvents
		if transport == "long-poll" {
			follow = followLongPoll
		}
		if err := follow(ctx, client, monitor); err != nil {
			return err
		}
		seen := time.Now()
		completed, ok := gates.completedAt(id)
		if !ok {
			return errors.New("the client saw the operation done before its handler returned")
		}
		latency.Record(seen.Sub(completed))
		return nil
	})
	if err == nil && res.Errors > 0 {
		err = fmt.Errorf("%d of %d completions failed, the first with: %w", res.Errors, res.Requests, res.FirstError)
	}
	if err == nil && latency.Count() == 0 {
		err = errors.New("no completion was measured")
	}
	return latency, err
}

// followEvents reads the operation's event stream until its terminal
// status event.
func followEvents(ctx context.Context, client *http.Client, monitor string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, monitor+"/events", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("events: status %d", resp.StatusCode)
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(nil, 1<<20)
	for lines.Scan() {
		if data, ok := strings.CutPrefix(lines.Text(), "data: "); ok && strings.Contains(data, `"done":true`) {
			if !strings.Contains(data, `"status":"Succeeded"`) {
				return fmt.Errorf("events: terminal status %s", data)
			}
			return nil
		}
	}
	return fmt.Errorf("events: the stream ended before the terminal event: %v", lines.Err())
}

// followLongPoll polls with Prefer: wait=30 until the answer is 303.
func followLongPoll(ctx context.Context, client *http.Client, monitor string) error {
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, monitor, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Prefer", "wait=30")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusSeeOther:
			return nil
		case http.StatusAccepted:
		default:
			return fmt.Errorf("long-poll: status %d", resp.StatusCode)
		}
	}
	return ctx.Err()
}

// gates hold each operation's handler until a client watches it, and
// note when the handler finished.
type gates struct {
	mu        sync.Mutex
	open      func(id string)
	gate      map[string]chan struct{}
	completed map[string]time.Time
}

func newGates() *gates {
	g := &gates{gate: map[string]chan struct{}{}, completed: map[string]time.Time{}}
	g.open = func(id string) {
		g.mu.Lock()
		defer g.mu.Unlock()
		ch := g.gateLocked(id)
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
	return g
}

func (g *gates) gateLocked(id string) chan struct{} {
	ch, ok := g.gate[id]
	if !ok {
		ch = make(chan struct{})
		g.gate[id] = ch
	}
	return ch
}

func (g *gates) completedAt(id string) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.completed[id]
	return t, ok
}

func (g *gates) forget(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.gate, id)
	delete(g.completed, id)
}

// gateLimit bounds a handler's wait for its client, so that a client that
// failed does not hold it forever.
const gateLimit = time.Minute

// app is GET /work, asynchronous: its handler waits for its gate, then
// records when it finished, just before returning.
func (g *gates) app() http.Handler {
	return asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := asyncreply.OperationID(r.Context())
		g.mu.Lock()
		gate := g.gateLocked(id)
		g.mu.Unlock()
		select {
		case <-gate:
		case <-r.Context().Done():
		case <-time.After(gateLimit):
		}
		w.Write([]byte("done"))
		g.mu.Lock()
		g.completed[id] = time.Now()
		g.mu.Unlock()
	}))
}

// watchSignal is a backend that calls watched when a watch on an
// operation begins: then a change to it cannot be missed.
type watchSignal struct {
	backend.Backend
	watched func(id string)
}

func (b watchSignal) Watch(ctx context.Context, id string) (<-chan struct{}, func(), error) {
	changes, stop, err := b.Backend.Watch(ctx, id)
	if err == nil {
		b.watched(id)
	}
	return changes, stop, err
}
