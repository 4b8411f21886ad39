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
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b := memory.New(memory.Config{})
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.Stop(ctx); err != nil {
				t.Errorf("Stop: %v", err)
			}
		})
		return b
	})
}
