package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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

// Sweep deletes a backlog of expired operations larger than one of its
// statements takes, all in one call: each statement must end within the
// statement timeout, however many operations expired at once.
func TestSweepDeletesABacklog(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, 4)
	schema := testdb.Schema(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := postgres.New(ctx, postgres.Config{Pool: pool, Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(ctx)
	ops := pgx.Identifier{schema, "asyncreply_operation"}.Sanitize()
	const backlog = 2500
	if _, err := pool.Exec(ctx, "INSERT INTO "+ops+` (id, status, timeout_us, retention_us, created_at, updated_at, expires_at, job_id)
		SELECT 'expired-' || n, 'Succeeded', 0, 0, now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour', 0
		FROM generate_series(1, $1) AS n`, backlog); err != nil {
		t.Fatal(err)
	}
	swept, err := b.Sweep(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+ops).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if swept != backlog || left != 0 {
		t.Errorf("Sweep deleted %d of %d expired operations, %d left", swept, backlog, left)
	}
}

// A Create that waits longer than lock_timeout for a lock — its
// idempotency key's, held by a session whose client has gone quiet — is
// unavailable (a 503 to its client), not a failure of the operation.
func TestLockTimeoutIsUnavailable(t *testing.T) {
	t.Parallel()
	direct := testdb.Pool(t, 2)
	schema := testdb.Schema(t, direct)
	u, err := url.Parse(testdb.URL())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("lock_timeout", "200ms")
	u.RawQuery = q.Encode()
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	b, err := postgres.New(ctx, postgres.Config{Pool: pool, Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(ctx)

	holder, err := direct.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "owner\x1fkey"); err != nil {
		t.Fatal(err)
	}
	_, _, err = b.Create(ctx, &backend.Operation{ID: "waits", Owner: "owner", IdempotencyKey: "key", CreatedAt: time.Now(), Retention: time.Hour})
	if !errors.Is(err, backend.ErrUnavailable) {
		t.Errorf("Create behind a lock held past lock_timeout: %v, want ErrUnavailable", err)
	}
}

// Migrate waits for another process's migration however long it takes,
// not only until lock_timeout: a process starting beside one that applies
// a long migration must not fail.
func TestMigrateWaitsPastLockTimeout(t *testing.T) {
	t.Parallel()
	direct := testdb.Pool(t, 2)
	schema := testdb.Schema(t, direct)
	const lockTimeout = 100 * time.Millisecond
	u, err := url.Parse(testdb.URL())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("lock_timeout", fmt.Sprintf("%dms", lockTimeout.Milliseconds()))
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	// The other process: it holds the lock Migrate takes, as while migrating.
	other, err := direct.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Release()
	lock := fnv.New64a()
	lock.Write([]byte("asyncreply migrate " + schema))
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(lock.Sum64())); err != nil {
		t.Fatal(err)
	}
	migrated := make(chan error, 1)
	go func() { migrated <- postgres.Migrate(ctx, pool, schema) }()
	select {
	case err := <-migrated:
		t.Fatalf("Migrate returned while another process held its lock: %v", err)
	case <-time.After(5 * lockTimeout): // the condition under test: well past lock_timeout
	}
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(lock.Sum64())); err != nil {
		t.Fatal(err)
	}
	if err := <-migrated; err != nil {
		t.Errorf("Migrate after the other process's migration: %v", err)
	}
}
