package memory_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendtest"
	"github.com/asyncreply/asyncreply/backend/memory"
)

// TestMain fails the run if a backend or a watch leaves a goroutine behind
// once every backend has been stopped.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	backendtest.Run(t, func(t *testing.T) backend.Backend { return newStopped(t, memory.Config{}) })
}

// newStopped returns a backend configured by cfg, stopped at the end of
// the test.
func newStopped(t *testing.T, cfg memory.Config) *memory.Backend {
	b := memory.New(cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return b
}

// With nothing durable behind it, the memory backend cannot hand operations
// to another process: at Stop, the running and the queued ones fail with 503
// instead of staying unfinished for good.
func TestStopFailsWhatCannotRun(t *testing.T) {
	t.Parallel()
	b := memory.New(memory.Config{Concurrency: 1})
	started := make(chan struct{}, 1)
	err := b.Start(context.Background(), func(ctx context.Context, id string) error {
		started <- struct{}{}
		<-ctx.Done()
		return context.Cause(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, id := range []string{"running", "queued"} {
		if _, _, err := b.Create(t.Context(), &backend.Operation{ID: id, Retention: time.Hour, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first operation never started")
	}
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Stop(stopped); err == nil {
		t.Error("Stop with an ended context returned nil; it had to cancel a running operation")
	}
	for _, id := range []string{"running", "queued"} {
		op, err := b.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if op.Status != backend.Failed || op.Failure == nil || op.Failure.Status != 503 {
			t.Errorf("%s operation after Stop: status %s, failure %+v; want Failed with 503", id, op.Status, op.Failure)
		}
	}
}
