package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/backendurl"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// acceptScenario: answering 202 for a new operation on each backend,
// against a plain handler writing the same bytes and, on PostgreSQL, a
// hand-written River handler.
func acceptScenario(ctx context.Context, e *env) (section, error) {
	s := section{
		title: "1. Accept (202)",
		intro: `GET /reports/{id} on an asynchronous route answers 202 with a monitor
URL. Each backend executes the operations it accepts meanwhile, and a
closed-loop run lasts until all of them are executed, so its throughput
includes the whole cost of each operation (the replay of a handler that
does next to nothing); its latencies are those of the 202s. "plain" is a
handler writing the same 202 bytes (headers and body captured from
asyncreply's own answer). "River by hand" inserts a row and a River job
in one transaction and answers 202; its worker stores a result in the
row. The memory backend, PostgreSQL and River by hand are also measured
executing nothing ("accept only", as a gateway beside separate workers):
the accept path alone.`,
	}
	var stops stack
	defer stops.run()

	h, shutdown, err := benchutil.Serve(asyncreply.Config{}, benchutil.Reports(nil))
	if err != nil {
		return s, err
	}
	plain := plainTarget(&stops, "/reports/7", benchutil.Capture(h, httptest.NewRequest("GET", "/reports/7", nil)))
	shutdown()
	var comparisons []comparison
	for _, k := range e.kinds() {
		var executed atomic.Int64
		srv, stop, err := e.serve(ctx, k, 0, briefRetention, benchutil.Reports(&executed))
		if err != nil {
			return s, err
		}
		stops.push(stop)
		subject := target{name: k.name, url: srv.URL + "/reports/7", want: http.StatusAccepted, settle: waitExecuted(executed.Load)}
		// PostgreSQL's open loop runs beside River by hand.
		comparisons = append(comparisons, comparison{subject: subject, baseline: plain, open: k.name != "postgres"})
		if k.name == "memory" {
			only, err := acceptOnly(ctx, e, &stops, k)
			if err != nil {
				return s, err
			}
			comparisons = append(comparisons, comparison{subject: only, baseline: plain})
		}
		if k.name != "postgres" {
			continue
		}
		byHand, err := e.riverByHand(ctx, &stops, true)
		if err != nil {
			return s, err
		}
		byHand.settle = waitExecuted(byHand.executed)
		comparisons = append(comparisons, comparison{subject: subject, baseline: byHand.target, open: true})

		onlyByHand, err := e.riverByHand(ctx, &stops, false)
		if err != nil {
			return s, err
		}
		only, err := acceptOnly(ctx, e, &stops, k)
		if err != nil {
			return s, err
		}
		comparisons = append(comparisons, comparison{subject: only, baseline: onlyByHand.target, open: true})
	}

	tbl, closed, err := e.compare(ctx, comparisons)
	if err != nil {
		return s, err
	}
	s.tables = append(s.tables, tbl)
	s.goals = append(s.goals, ratioGoal("accept, memory, vs plain (throughput)", "≥ 0.7×", 0.7, closed["memory vs plain"]))
	if e.admin != nil {
		s.goals = append(s.goals,
			ratioGoal("accept, PostgreSQL, vs River by hand, accept only (throughput)", "≥ 1.0× (stretch ≥ 2×)", 1, closed["postgres, accept only vs River by hand, accept only"]),
			ratioGoal("accept, PostgreSQL, vs River by hand, both executing (throughput)", "≥ 1.0×", 1, closed["postgres vs River by hand"]))
	}
	return s, nil
}

// acceptOnly serves Reports on a new backend of kind k that executes
// nothing, as a gateway beside separate workers does. With nothing run,
// what waits only grows: the backend is unbounded, so that what is
// measured is accepting, not memory's refusals past its default bound.
func acceptOnly(ctx context.Context, e *env, stops *stack, k kind) (target, error) {
	be, err := e.openWith(ctx, k, backendurl.Options{MaxQueued: -1})
	if err != nil {
		return target{}, err
	}
	srv, stop, err := serveOn(benchutil.AcceptOnly{Backend: be}, k.durable, briefRetention, benchutil.Reports(nil))
	if err != nil {
		return target{}, err
	}
	stops.push(stop)
	return target{name: k.name + ", accept only", url: srv.URL + "/reports/7", want: http.StatusAccepted}, nil
}

// byHandTarget is River by hand served on loopback.
type byHandTarget struct {
	target
	executed func() int64
}

// riverByHand serves River by hand, executing or not, in a schema of its
// own.
func (e *env) riverByHand(ctx context.Context, stops *stack, execute bool) (byHandTarget, error) {
	pool, err := e.pool(ctx)
	if err != nil {
		return byHandTarget{}, err
	}
	stops.push(pool.Close)
	h, err := benchutil.NewRiverByHand(ctx, pool, e.schema(), execute)
	if err != nil {
		return byHandTarget{}, err
	}
	stops.push(func() { h.Stop(context.Background()) })
	srv := serveHandler(stops, h)
	name := "River by hand"
	if !execute {
		name += ", accept only"
	}
	return byHandTarget{target{name: name, url: srv.URL + "/reports/7", want: http.StatusAccepted}, h.Executed}, nil
}
