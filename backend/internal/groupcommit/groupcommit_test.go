package groupcommit_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/internal/groupcommit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// store is a fake backend: Together fails a batch that holds a "bad"
// operation; it records the size of every batch.
type store struct {
	mu      sync.Mutex
	batches []int
	release chan struct{} // the first Together waits on it, so others queue up
	once    sync.Once
}

func (s *store) funcs() groupcommit.Funcs {
	return groupcommit.Funcs{
		Together: func(ctx context.Context, batch []groupcommit.Request) ([]groupcommit.Result, error) {
			s.once.Do(func() { <-s.release })
			s.mu.Lock()
			s.batches = append(s.batches, len(batch))
			s.mu.Unlock()
			results := make([]groupcommit.Result, len(batch))
			for i, req := range batch {
				if req.Op.ID == "bad" {
					return nil, errors.New("constraint violated")
				}
				results[i] = groupcommit.Result{Stored: req.Op, Created: true}
			}
			return results, nil
		},
		Alone: func(req groupcommit.Request) groupcommit.Result {
			if req.Op.ID == "bad" {
				return groupcommit.Result{Err: errors.New("constraint violated")}
			}
			return groupcommit.Result{Stored: req.Op, Created: true}
		},
	}
}

// Creates that arrive while a commit is in progress share the next one, and
// a failing operation in a batch fails only itself. The bubble makes the
// queueing deterministic: synctest.Wait returns once every goroutine in it is
// blocked, so the first Create is known to be inside its commit, and the
// others to be waiting for the committer, before the first is released.
func TestBatchesAndIsolatesFailures(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := &store{release: make(chan struct{})}
		c := groupcommit.Start(s.funcs())
		defer c.Stop()

		first := make(chan groupcommit.Result, 1)
		go func() { first <- c.Create(t.Context(), &backend.Operation{ID: "first"}) }()
		synctest.Wait() // the committer holds the first batch, waiting on release

		const waiting = 20
		var wg sync.WaitGroup
		results := make([]groupcommit.Result, waiting)
		for i := range waiting {
			wg.Go(func() {
				id := "op"
				if i == 7 {
					id = "bad"
				}
				results[i] = c.Create(t.Context(), &backend.Operation{ID: id})
			})
		}
		synctest.Wait() // every other Create waits to hand its operation over
		close(s.release)
		wg.Wait()

		if r := <-first; r.Err != nil || !r.Created {
			t.Fatalf("first Create: %+v", r)
		}
		for i, r := range results {
			switch {
			case i == 7 && r.Err == nil:
				t.Error("the bad operation was created")
			case i != 7 && (r.Err != nil || !r.Created):
				t.Errorf("Create %d failed beside a bad operation: %+v", i, r)
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if want := []int{1, waiting}; !slices.Equal(s.batches, want) {
			t.Errorf("batch sizes %v, want %v: the Creates that waited together were not committed together", s.batches, want)
		}
	})
}

// A caller whose context has ended gets its error, and the committer goes on.
func TestCanceledCaller(t *testing.T) {
	t.Parallel()
	s := &store{release: make(chan struct{})}
	close(s.release)
	c := groupcommit.Start(s.funcs())
	defer c.Stop()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if r := c.Create(ctx, &backend.Operation{ID: "late"}); !errors.Is(r.Err, context.Canceled) {
		t.Errorf("Create with an ended context: %+v, want context.Canceled", r)
	}
	if r := c.Create(t.Context(), &backend.Operation{ID: "next"}); r.Err != nil || !r.Created {
		t.Errorf("Create after a canceled one: %+v", r)
	}
}
