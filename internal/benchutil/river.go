package benchutil

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/asyncreply/asyncreply/backend/postgres"
)

// RiverByHand is the PostgreSQL baseline: what a user would write by hand
// with River — insert a row and a job in one transaction, answer 202 — and,
// when it executes, a River client whose worker stores each result in its
// row.
type RiverByHand struct {
	worker  *byHandWorker
	pool    *pgxpool.Pool
	table   string
	client  *river.Client[pgx.Tx]
	execute bool
	request []byte
}

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
	pool     *pgxpool.Pool
	table    string
	executed atomic.Int64
}

func (w *byHandWorker) Work(ctx context.Context, job *river.Job[byHandArgs]) error {
	_, err := w.pool.Exec(ctx, "UPDATE "+w.table+" SET result = $2, finished_at = $3 WHERE id = $1",
		job.Args.RequestID, []byte("report 7"), time.Now())
	if err == nil {
		w.executed.Add(1)
	}
	return err
}

// NewRiverByHand creates the baseline's table and River's in schema, and
// starts its workers when execute is set. Call Stop when done.
func NewRiverByHand(ctx context.Context, pool *pgxpool.Pool, schema string, execute bool) (*RiverByHand, error) {
	if err := postgres.Migrate(ctx, pool, schema); err != nil { // River's tables
		return nil, err
	}
	table := pgx.Identifier{schema, "report_request"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+table+` (id text PRIMARY KEY, request bytea NOT NULL,
		result bytea, created_at timestamptz NOT NULL, finished_at timestamptz)`); err != nil {
		return nil, fmt.Errorf("river by hand: %w", err)
	}
	worker := &byHandWorker{pool: pool, table: table}
	workers := river.NewWorkers()
	river.AddWorker(workers, worker)
	riverConfig := &river.Config{Workers: workers, Schema: schema, Logger: slog.New(slog.DiscardHandler)}
	if execute {
		riverConfig.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 100}}
	}
	client, err := river.NewClient(riverpgxv5.New(pool), riverConfig)
	if err != nil {
		return nil, fmt.Errorf("river by hand: %w", err)
	}
	if execute {
		if err := client.Start(ctx); err != nil {
			return nil, fmt.Errorf("river by hand: %w", err)
		}
	}
	return &RiverByHand{
		worker: worker, pool: pool, table: table, client: client, execute: execute,
		request: make([]byte, 300), // about what asyncreply records of a small GET
	}, nil
}

// Stop stops the workers, if any.
func (h *RiverByHand) Stop(ctx context.Context) error {
	if !h.execute {
		return nil
	}
	return h.client.Stop(ctx)
}

// Executed counts the results stored by the workers.
func (h *RiverByHand) Executed() int64 { return h.worker.executed.Load() }

// ServeHTTP accepts a request: one transaction inserting its row and its
// job, then 202 with a monitor URL.
func (h *RiverByHand) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := NewID()
	if err := h.insert(r.Context(), id); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Location", "/operations/"+id)
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, `{"id":"`+id+`","status":"NotStarted"}`)
}

func (h *RiverByHand) insert(ctx context.Context, id string) error {
	tx, err := h.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "INSERT INTO "+h.table+" (id, request, created_at) VALUES ($1, $2, $3)", id, h.request, time.Now()); err != nil {
		return err
	}
	if _, err := h.client.InsertTx(ctx, tx, byHandArgs{RequestID: id}, nil); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
