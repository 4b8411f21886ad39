package main

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/bench/load"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// durableCapacityShare divides opts.capacity for durable backends: they
// accept about a thousand operations a second here, so that submitting all
// of opts.capacity would take longer than each runs, and they would never
// all be running at once.
const durableCapacityShare = 4

// capacityScenario: many slow operations in flight at once. Accepting must
// not slow down as they pile up, every one must complete, and each costs
// memory only while it runs.
func capacityScenario(ctx context.Context, e *env) (section, error) {
	s := section{
		title: "5. Capacity",
		intro: fmt.Sprintf(`Operations whose handler takes %v each are submitted by %d clients as
fast as they are accepted, on a backend executing as many at once; then
every one is long-polled to its 303. Durable backends get a quarter as
many: at their accept rate here, more would not all be running at once.
Memory per operation running: live heap and goroutine stacks after
garbage collection, once the last is accepted, minus the same before the
first, divided by the operations then running.`, e.opts.hold, e.opts.clients),
	}
	tbl := &table{header: []string{"backend", "operations", "accepted in", "accept p50, first 10%", "accept p99, first 10%",
		"accept p50, last 10%", "accept p99, last 10%", "running after the last accept", "completed",
		"heap per operation running", "stacks per operation running"}}
	for _, k := range e.kinds() {
		n := e.opts.capacity
		if k.durable {
			n = max(n/durableCapacityShare, 1)
		}
		c, err := e.capacity(ctx, k, n)
		if err != nil {
			return s, fmt.Errorf("%s: %w", k.name, err)
		}
		perOp := func(grown int64) string {
			if c.running <= 0 {
				return "—"
			}
			return bytesString(float64(grown) / float64(c.running))
		}
		tbl.rows = append(tbl.rows, []string{
			k.name, count(n), ms(c.accepting), ms(c.first.Quantile(0.5)), ms(c.first.Quantile(0.99)),
			ms(c.last.Quantile(0.5)), ms(c.last.Quantile(0.99)), count(int(c.running)), count(n),
			perOp(c.heap), perOp(c.stacks),
		})
		s.measure(k.name+", accept p50, first 10%", float64(c.first.Quantile(0.5)))
		s.measure(k.name+", accept p50, last 10%", float64(c.last.Quantile(0.5)))
		s.measure(k.name+", heap growth", float64(c.heap))
		s.notes = append(s.notes, fmt.Sprintf("%s: accept p99 in the last 10%% is %.2f× that of the first 10%%.",
			k.name, ratio(c.last.Quantile(0.99), c.first.Quantile(0.99))))
	}
	s.tables = append(s.tables, tbl)
	return s, nil
}

// capacityRun is what one backend's capacity run measured.
type capacityRun struct {
	accepting    time.Duration
	first, last  *load.Histogram // accept latencies of the first and last tenth
	running      int64           // handlers running after the last accept
	heap, stacks int64           // growth from before the first accept to then
}

// capacity submits n operations, each running opts.hold, to a new backend
// of kind k executing n at once, and waits for all to complete.
func (e *env) capacity(ctx context.Context, k kind, n int) (capacityRun, error) {
	hold := e.opts.hold
	var started, finished atomic.Int64
	app := asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		defer finished.Add(1)
		timer := time.NewTimer(hold)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
			return
		}
		w.Write([]byte("slow answer"))
	}))
	srv, stop, err := e.serve(ctx, k, n, longRetention, app)
	if err != nil {
		return capacityRun{}, err
	}
	defer stop()
	client := newClient(e.opts.clients)
	defer client.CloseIdleConnections()

	// Warm the server up, so that what is measured is operations, not
	// connections and first allocations.
	if _, err := finishedOperation(ctx, client, srv.URL+"/slow"); err != nil {
		return capacityRun{}, err
	}
	heapBefore, stacksBefore := benchutil.LiveMemory()

	tenth := max(n/10, 1)
	c := capacityRun{first: load.NewHistogram(), last: load.NewHistogram()}
	monitors := make([]string, n)
	accepting := time.Now()
	res, err := load.Run(ctx, load.Config{
		Concurrency: e.opts.clients, Requests: n,
		Observe: func(seq int, latency time.Duration) {
			switch {
			case seq < tenth:
				c.first.Record(latency)
			case seq >= n-tenth:
				c.last.Record(latency)
			}
		},
	}, func(ctx context.Context, seq int) error {
		resp, _, err := get(ctx, client, srv.URL+"/slow", http.StatusAccepted)
		if err == nil {
			monitors[seq] = resp.Header.Get("Location")
		}
		return err
	})
	if err == nil && res.Errors > 0 {
		err = fmt.Errorf("%d of %d accepts failed, the first with: %w", res.Errors, res.Requests, res.FirstError)
	}
	if err != nil {
		return c, err
	}
	c.accepting = time.Since(accepting)
	c.running = started.Load() - finished.Load()
	heap, stacks := benchutil.LiveMemory()
	c.heap, c.stacks = int64(heap)-int64(heapBefore), int64(stacks)-int64(stacksBefore)

	// Every operation has had hold to run by now; the bound leaves room
	// for a slow machine, not for a lost operation.
	ctx, cancel := context.WithTimeout(ctx, hold+2*time.Minute)
	defer cancel()
	var completed atomic.Int64
	res, err = load.Run(ctx, load.Config{Concurrency: e.opts.clients, Requests: n}, func(ctx context.Context, seq int) error {
		if err := followLongPoll(ctx, client, monitors[seq]); err != nil {
			return err
		}
		completed.Add(1)
		return nil
	})
	if err == nil && int(completed.Load()) != n {
		err = fmt.Errorf("%d of %d operations completed, the first failure: %v", completed.Load(), n, res.FirstError)
	}
	return c, err
}
