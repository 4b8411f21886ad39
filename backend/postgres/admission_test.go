package postgres_test

import (
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendtest"
	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/internal/benchutil"
	"github.com/asyncreply/asyncreply/internal/testdb"
)

func TestBoundedConformance(t *testing.T) {
	t.Parallel()
	backendtest.RunBounded(t, func(t *testing.T, bounds backendtest.Bounds) backend.Backend {
		pool := testdb.Pool(t, 10)
		return newBackendWith(t, postgres.Config{
			Pool: pool, Schema: testdb.Schema(t, pool),
			MaxQueued: bounds.MaxQueued, MaxQueuedPerOwner: bounds.MaxQueuedPerOwner,
		})
	})
}

// The bound is on the schema, not on one process: two processes with pools
// of their own, accepting at once and each batching its Creates, fill
// exactly the places there are, in total and for one owner.
func TestBoundHoldsAcrossProcesses(t *testing.T) {
	t.Parallel()
	const bound, perOwner = 12, 4
	schema := testdb.Schema(t, testdb.Pool(t, 1))
	var processes []*postgres.Backend
	for range 2 {
		processes = append(processes, newBackendWith(t, postgres.Config{
			Pool: testdb.Pool(t, 10), Schema: schema, MaxQueued: bound, MaxQueuedPerOwner: perOwner,
		}))
	}

	busy := "owner-" + rand.Text()
	var created, createdBusy, refused int
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 4 * bound {
		wg.Go(func() {
			op := waitingOperation("owner-" + rand.Text())
			if i%4 == 0 {
				op.Owner = busy // a quarter of the Creates, 12 for 4 places
			}
			<-start
			_, _, err := processes[i%len(processes)].Create(t.Context(), op)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
				if op.Owner == busy {
					createdBusy++
				}
			case errors.Is(err, backend.ErrQueueFull), errors.Is(err, backend.ErrOwnerQueueFull):
				refused++
			default:
				t.Errorf("Create: %v, want nil or a refusal", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if created != bound || createdBusy > perOwner || refused != 3*bound {
		t.Errorf("two processes on one schema with bounds of %d, %d per owner: %d created, %d of them the busy owner's, %d refused; want %d, at most %d, and %d",
			bound, perOwner, created, createdBusy, refused, bound, perOwner, 3*bound)
	}
}

// waitingOperation returns a new operation of owner, as Create is given it.
func waitingOperation(owner string) *backend.Operation {
	now := time.Now()
	return &backend.Operation{
		ID: rand.Text(), Owner: owner, Request: []byte("request"),
		Timeout: time.Minute, Retention: time.Hour, CreatedAt: now, UpdatedAt: now,
	}
}

// BenchmarkAcceptBounded is BenchmarkAccept's asyncreply runs with a bound
// on the operations waiting, never reached: the cost of the admission lock
// and of counting what waits, which grows with it (accept-only) up to the
// bound.
//
//	go test -run '^$' -bench Accept -benchtime 5s ./backend/postgres/
func BenchmarkAcceptBounded(b *testing.B) {
	for _, execute := range []bool{false, true} {
		mode := map[bool]string{false: "accept-only", true: "with-execution"}[execute]
		b.Run(mode+"/asyncreply", func(b *testing.B) {
			benchutil.RunAccept(b, newAsyncreplyWith(b, execute, postgres.Config{MaxQueued: 100_000}))
		})
	}
}
