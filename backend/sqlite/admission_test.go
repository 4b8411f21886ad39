package sqlite_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendtest"
	"github.com/asyncreply/asyncreply/backend/sqlite"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

func TestBoundedConformance(t *testing.T) {
	t.Parallel()
	backendtest.RunBounded(t, func(t *testing.T, bounds backendtest.Bounds) backend.Backend {
		return newBackendWith(t, sqlite.Config{
			Path: newPath(t), MaxQueued: bounds.MaxQueued, MaxQueuedPerOwner: bounds.MaxQueuedPerOwner,
		})
	})
}

// The bound is on the file, not on one process: two processes accepting at
// once, each batching its Creates, fill exactly the places there are.
func TestBoundHoldsAcrossProcesses(t *testing.T) {
	t.Parallel()
	const bound = 10
	path := newPath(t)
	processes := []*sqlite.Backend{
		newBackendWith(t, sqlite.Config{Path: path, MaxQueued: bound}),
		newBackendWith(t, sqlite.Config{Path: path, MaxQueued: bound}),
	}
	var created, refused int
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 4 * bound {
		wg.Go(func() {
			<-start
			_, _, err := processes[i%len(processes)].Create(t.Context(), newOperation())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, backend.ErrQueueFull):
				refused++
			default:
				t.Errorf("Create: %v, want nil or ErrQueueFull", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if created != bound || refused != 3*bound {
		t.Errorf("two processes on one file with a bound of %d: %d created, %d refused; want %d and %d", bound, created, refused, bound, 3*bound)
	}
}

// BenchmarkAcceptBounded is BenchmarkAccept's SQLite runs with a bound on
// the operations waiting, never reached: the cost of counting them, which
// grows with what waits (accept-only) up to the bound.
//
//	go test -run '^$' -bench Accept -benchtime 5s ./backend/sqlite/
func BenchmarkAcceptBounded(b *testing.B) {
	bounded := func(b *testing.B) *sqlite.Backend {
		return newBackendWith(b, sqlite.Config{Path: newPath(b), MaxQueued: 100_000})
	}
	b.Run("accept-only/sqlite", func(b *testing.B) {
		benchutil.RunAccept(b, benchutil.App(b, benchutil.AcceptOnly{Backend: bounded(b)}))
	})
	b.Run("with-execution/sqlite", func(b *testing.B) {
		benchutil.RunAccept(b, benchutil.App(b, bounded(b)))
	})
}
