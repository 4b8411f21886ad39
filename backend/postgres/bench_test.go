package postgres_test

import (
	"context"
	"log/slog"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/internal/benchutil"
	"github.com/asyncreply/asyncreply/internal/testdb"
)

// byHand is the baseline: River used by hand (benchutil.RiverByHand), its
// workers stopped when the benchmark ends.
func byHand(b *testing.B, pool *pgxpool.Pool, schema string, execute bool) http.Handler {
	h, err := benchutil.NewRiverByHand(context.Background(), pool, schema, execute)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Stop(context.Background()) })
	return h
}

// BenchmarkAccept compares accepting on PostgreSQL with the hand-written
// River baseline, both over loopback HTTP with concurrent clients, the
// database on the same machine. "accept-only" runs no workers on either
// side: the cost of the accept path alone (the same transaction of two
// inserts on both sides). "with-execution" executes every operation
// meanwhile: asyncreply marks it running, replays it and stores the response
// (two updates, each with a NOTIFY); the baseline's worker stores a result
// (one update). Goal: ≥ 1.0× the baseline.
//
//	go test -run '^$' -bench Accept -benchtime 5s ./backend/postgres/
func BenchmarkAccept(b *testing.B) {
	for _, execute := range []bool{false, true} {
		mode := map[bool]string{false: "accept-only", true: "with-execution"}[execute]
		b.Run(mode+"/baseline=river-by-hand", func(b *testing.B) {
			pool := testdb.Pool(b, 20)
			benchutil.RunAccept(b, byHand(b, pool, testdb.Schema(b, pool), execute))
		})
		b.Run(mode+"/asyncreply", func(b *testing.B) {
			benchutil.RunAccept(b, newAsyncreply(b, execute))
		})
	}
}

// BenchmarkNotificationLatency measures how soon a watcher in one process
// learns that another process completed an operation: two backends with
// pools and LISTEN connections of their own, as two processes would have.
// It reports the p50 and p99 of the time from the start of Complete to the
// watcher's wake-up, which includes Complete's own round trip.
func BenchmarkNotificationLatency(b *testing.B) {
	pool := testdb.Pool(b, 4)
	schema := testdb.Schema(b, pool)
	newBackend := func() *postgres.Backend {
		be, err := postgres.New(context.Background(), postgres.Config{Pool: testdb.Pool(b, 4), Schema: schema, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { be.Stop(context.Background()) })
		return be
	}
	benchutil.NotificationLatency(b, newBackend(), newBackend())
}

// newAsyncreply serves the benchmark application on a PostgreSQL backend of
// its own; without execute, the process only accepts.
func newAsyncreply(b *testing.B, execute bool) http.Handler {
	return newAsyncreplyWith(b, execute, postgres.Config{})
}

// newAsyncreplyWith is newAsyncreply on a backend configured by cfg, in a
// pool and a schema of its own.
func newAsyncreplyWith(b *testing.B, execute bool, cfg postgres.Config) http.Handler {
	pool := testdb.Pool(b, 20)
	cfg.Pool, cfg.Schema, cfg.Logger = pool, testdb.Schema(b, pool), slog.New(slog.DiscardHandler)
	pg, err := postgres.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	if !execute {
		return benchutil.App(b, benchutil.AcceptOnly{Backend: pg})
	}
	return benchutil.App(b, pg)
}
