package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/internal/benchutil"
	"github.com/asyncreply/asyncreply/internal/testdb"
)

// byHandArgs is the job a user writing the pattern by hand with River would
// insert beside their own row.
type byHandArgs struct {
	RequestID string `json:"request_id"`
}

func (byHandArgs) Kind() string { return "report_by_hand" }

// byHandWorker stores its result in the request's row, as a user's worker
// would for pollers to find.
type byHandWorker struct {
	river.WorkerDefaults[byHandArgs]
	pool  *pgxpool.Pool
	table string
}

func (w *byHandWorker) Work(ctx context.Context, job *river.Job[byHandArgs]) error {
	_, err := w.pool.Exec(ctx, "UPDATE "+w.table+" SET result = $2, finished_at = $3 WHERE id = $1",
		job.Args.RequestID, []byte("report 7"), time.Now())
	return err
}

// byHand is the baseline: what a user would write by hand with River —
// insert a row and a job in one transaction, answer 202 — and, when execute
// is set, a River client whose worker stores each result in its row.
func byHand(b *testing.B, pool *pgxpool.Pool, schema string, execute bool) http.Handler {
	ctx := context.Background()
	if err := postgres.Migrate(ctx, pool, schema); err != nil { // River's tables
		b.Fatal(err)
	}
	table := pgx.Identifier{schema, "report_request"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+table+` (id text PRIMARY KEY, request bytea NOT NULL,
		result bytea, created_at timestamptz NOT NULL, finished_at timestamptz)`); err != nil {
		b.Fatal(err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &byHandWorker{pool: pool, table: table})
	riverConfig := &river.Config{Workers: workers, Schema: schema, Logger: slog.New(slog.DiscardHandler)}
	if execute {
		riverConfig.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 100}}
	}
	client, err := river.NewClient(riverpgxv5.New(pool), riverConfig)
	if err != nil {
		b.Fatal(err)
	}
	if execute {
		if err := client.Start(ctx); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { client.Stop(context.Background()) })
	}
	request := make([]byte, 300) // about what asyncreply records of a small GET
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := asyncreplyStyleID()
		tx, err := pool.Begin(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer tx.Rollback(context.Background())
		if _, err := tx.Exec(r.Context(), "INSERT INTO "+table+" (id, request, created_at) VALUES ($1, $2, $3)", id, request, time.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if _, err := client.InsertTx(r.Context(), tx, byHandArgs{RequestID: id}, nil); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := tx.Commit(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Location", "/operations/"+id)
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"id":"`+id+`","status":"NotStarted"}`)
	})
}

func asyncreplyStyleID() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
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
	benchutil.NotificationLatency(b, newBackend(), newBackend(), asyncreplyStyleID)
}

// newAsyncreply serves the benchmark application on a PostgreSQL backend of
// its own; without execute, the process only accepts.
func newAsyncreply(b *testing.B, execute bool) http.Handler {
	pool := testdb.Pool(b, 20)
	pg, err := postgres.New(context.Background(), postgres.Config{Pool: pool, Schema: testdb.Schema(b, pool), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if !execute {
		return benchutil.App(b, benchutil.AcceptOnly{Backend: pg})
	}
	return benchutil.App(b, pg)
}
