package postgres_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendtest"
	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/internal/testdb"
	"github.com/asyncreply/asyncreply/internal/testprocess"
)

func TestMain(m *testing.M) {
	testprocess.Role(roles) // when run as a process of the multi-process test
	goleak.VerifyTestMain(m)
}

// newBackend returns a backend in a schema of its own on the test database.
func newBackend(t *testing.T) *postgres.Backend {
	t.Helper()
	pool := testdb.Pool(t, 10)
	return newBackendWith(t, postgres.Config{Pool: pool, Schema: testdb.Schema(t, pool)})
}

// newBackendWith returns a backend configured by cfg, logging nowhere,
// stopped at the end of the test.
func newBackendWith(t *testing.T, cfg postgres.Config) *postgres.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.Logger = slog.New(slog.DiscardHandler)
	b, err := postgres.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return b
}

func TestConformance(t *testing.T) {
	t.Parallel()
	backendtest.Run(t, func(t *testing.T) backend.Backend { return newBackend(t) })
}
