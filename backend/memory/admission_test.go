package memory_test

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendtest"
	"github.com/asyncreply/asyncreply/backend/memory"
)

func TestBoundedConformance(t *testing.T) {
	t.Parallel()
	backendtest.RunBounded(t, func(t *testing.T, bounds backendtest.Bounds) backend.Backend {
		return newStopped(t, memory.Config{
			MaxQueued:         unboundedIfZero(bounds.MaxQueued),
			MaxQueuedPerOwner: bounds.MaxQueuedPerOwner,
		})
	})
}

// unboundedIfZero turns the suite's "no bound", zero, into memory's, which
// is negative: memory's zero is its default bound.
func unboundedIfZero(bound int) int {
	if bound == 0 {
		return -1
	}
	return bound
}

// The bytes of the recorded requests waiting are bounded too: many large
// bodies are refused long before their number is, and the place a request
// frees is its size. A request larger than the bound is still accepted when
// nothing waits, or it never could be.
func TestBoundsQueuedBytes(t *testing.T) {
	t.Parallel()
	const bound = 10 << 10
	b := newStopped(t, memory.Config{MaxQueuedBytes: bound})
	create := func(size int) (*backend.Operation, error) {
		now := time.Now()
		op := &backend.Operation{ID: rand.Text(), Request: make([]byte, size), Retention: time.Hour, CreatedAt: now}
		_, _, err := b.Create(t.Context(), op)
		return op, err
	}
	var waiting []*backend.Operation
	for range 4 {
		op, err := create(2 << 10)
		if err != nil {
			t.Fatalf("Create of 2 KiB with %d KiB waiting and a bound of 10 KiB: %v", 2*len(waiting), err)
		}
		waiting = append(waiting, op)
	}
	if _, err := create(3 << 10); !errors.Is(err, backend.ErrQueueFull) {
		t.Fatalf("Create of 3 KiB with 8 KiB waiting and a bound of 10 KiB: %v, want ErrQueueFull", err)
	}
	if _, err := create(2 << 10); err != nil {
		t.Fatalf("Create of 2 KiB with 8 KiB waiting and a bound of 10 KiB: %v", err)
	}
	for _, op := range waiting {
		if _, err := b.MarkRunning(t.Context(), op.ID, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := create(8 << 10); err != nil {
		t.Fatalf("Create of 8 KiB with 2 KiB waiting, the others running, and a bound of 10 KiB: %v", err)
	}

	alone := newStopped(t, memory.Config{MaxQueuedBytes: bound})
	huge := &backend.Operation{ID: rand.Text(), Request: make([]byte, 2*bound), Retention: time.Hour, CreatedAt: time.Now()}
	if _, _, err := alone.Create(t.Context(), huge); err != nil {
		t.Fatalf("Create of a request twice the bound with nothing waiting: %v; it could never be accepted", err)
	}
}

// The default bound of memory.New refuses a flood of operations that no
// worker takes, rather than hold them all.
func TestDefaultBoundRefuses(t *testing.T) {
	t.Parallel()
	b := newStopped(t, memory.Config{})
	now := time.Now()
	for i := range memory.DefaultMaxQueued {
		if _, _, err := b.Create(t.Context(), &backend.Operation{ID: rand.Text(), Retention: time.Hour, CreatedAt: now}); err != nil {
			t.Fatalf("Create %d of %d: %v", i+1, memory.DefaultMaxQueued, err)
		}
	}
	if _, _, err := b.Create(t.Context(), &backend.Operation{ID: rand.Text(), Retention: time.Hour, CreatedAt: now}); !errors.Is(err, backend.ErrQueueFull) {
		t.Fatalf("Create past DefaultMaxQueued: %v, want ErrQueueFull", err)
	}
}
