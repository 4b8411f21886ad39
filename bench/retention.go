package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/bench/load"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// retentionScenario: what finished operations cost while they are kept,
// and how long sweeping them takes once they expire.
func retentionScenario(ctx context.Context, e *env) (section, error) {
	n := e.opts.retained
	s := section{
		title: "6. Retention",
		intro: fmt.Sprintf(`Memory: %s finished operations, each with a 64-byte response body, kept
by the memory backend (live heap after garbage collection, after minus
before, per operation). Sweep: %s operations created and completed through
the backend's own API with a clock two hours behind, so that all have
expired, then one Sweep deletes them.`, count(n), count(n)),
	}
	body := bytes.Repeat([]byte("x"), 64)
	perOp, err := benchutil.RetainedBytes(n, body)
	if err != nil {
		return s, err
	}
	beyond := perOp - float64(len(body))
	s.measure("memory per retained operation", perOp)
	s.tables = append(s.tables, &table{
		header: []string{"backend", "operations", "bytes per operation", "beyond its body"},
		rows:   [][]string{{"memory", count(n), bytesString(perOp), bytesString(beyond)}},
	})
	s.goals = append(s.goals, goal{what: "memory per retained operation, beyond its body", target: "≤ 1 KiB",
		measured: bytesString(beyond), value: beyond, met: beyond <= 1024})

	sweeps := &table{header: []string{"backend", "expired operations", "created and completed in", "swept in", "per operation"}}
	// The backends fill at once, each waiting on its own store, and sweep
	// one after the other, alone on the machine.
	kinds := e.kinds()
	filled := make([]expired, len(kinds))
	var filling sync.WaitGroup
	for i, k := range kinds {
		filling.Go(func() { filled[i] = e.fill(ctx, k, n) })
	}
	filling.Wait()
	for _, f := range filled {
		if f.err == nil {
			f.err = f.sweep(ctx, n)
		}
		if f.be != nil {
			f.be.Stop(context.Background())
		}
		if f.err != nil {
			return s, fmt.Errorf("%s: %w", f.kind.name, f.err)
		}
		s.measure(f.kind.name+" sweep", float64(f.took))
		sweeps.rows = append(sweeps.rows, []string{f.kind.name, count(n), ms(f.setup), ms(f.took), fmt.Sprintf("%.2f µs", float64(f.took.Microseconds())/float64(n))})
	}
	s.tables = append(s.tables, sweeps)
	return s, nil
}

// expired is a backend filled with expired operations, to be swept.
type expired struct {
	kind        kind
	be          backend.Backend // nil when it could not be opened
	setup, took time.Duration
	err         error
}

// fill opens a new backend of kind k and creates n expired operations in
// it. The caller stops the backend.
func (e *env) fill(ctx context.Context, k kind, n int) expired {
	f := expired{kind: k}
	f.be, f.err = e.open(ctx, k, 0)
	if f.err != nil {
		return f
	}
	long := time.Now().Add(-2 * time.Hour)
	request, response := bytes.Repeat([]byte("r"), 300), bytes.Repeat([]byte("x"), 64)
	started := time.Now()
	// Never started, the backend executes nothing: the operations are
	// completed here, as a worker would, two hours ago. Many at once, so
	// that durable backends commit them together.
	res, err := load.Run(ctx, load.Config{Concurrency: 4 * e.opts.clients, Requests: n}, func(ctx context.Context, seq int) error {
		id := benchutil.NewID()
		op := &backend.Operation{ID: id, Request: request, Timeout: time.Minute, Retention: time.Hour, CreatedAt: long}
		if _, _, err := f.be.Create(ctx, op); err != nil {
			return err
		}
		_, err := f.be.Complete(ctx, id, backend.Outcome{Status: backend.Succeeded, Response: response, At: long})
		return err
	})
	if err == nil && res.Errors > 0 {
		err = fmt.Errorf("%d of %d operations failed, the first with: %w", res.Errors, n, res.FirstError)
	}
	f.setup, f.err = time.Since(started), err
	return f
}

// sweep times the Sweep that deletes the n expired operations.
func (f *expired) sweep(ctx context.Context, n int) error {
	started := time.Now()
	swept, err := f.be.Sweep(ctx, time.Now())
	f.took = time.Since(started)
	if err == nil && swept != n {
		err = fmt.Errorf("swept %d of %d expired operations", swept, n)
	}
	return err
}
