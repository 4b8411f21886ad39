package postgres_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/internal/testdb"
)

// A job River marked running whose worker never started the operation —
// the fetch's answer lost with a broken connection — is replaced by a new
// job at the next sweep, rather than waiting out the operation's timeout
// for River's rescuer; a job taken recently is left to its worker.
func TestSweepReschedulesLostJobs(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, 10)
	schema := testdb.Schema(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const rescueAfter = time.Minute
	b, err := postgres.New(ctx, postgres.Config{Pool: pool, Schema: schema, Logger: slog.New(slog.DiscardHandler), RescueAfter: rescueAfter})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	ops, jobs := pgx.Identifier{schema, "asyncreply_operation"}.Sanitize(), pgx.Identifier{schema, "river_job"}.Sanitize()
	jobOf := func(id string) int64 {
		t.Helper()
		var job int64
		if err := pool.QueryRow(ctx, "SELECT job_id FROM "+ops+" WHERE id = $1", id).Scan(&job); err != nil {
			t.Fatal(err)
		}
		return job
	}
	// lose marks an operation's job as taken by a worker that never started
	// it, ago.
	lose := func(id string, ago time.Duration) int64 {
		t.Helper()
		job := jobOf(id)
		if _, err := pool.Exec(ctx, "UPDATE "+jobs+` SET state = 'running', attempt = 1,
			attempted_at = now() - $2 * interval '1 microsecond' WHERE id = $1`, job, ago.Microseconds()); err != nil {
			t.Fatal(err)
		}
		return job
	}
	now := time.Now()
	for _, id := range []string{"lost", "recent"} {
		if _, _, err := b.Create(ctx, &backend.Operation{ID: id, Status: backend.NotStarted, Timeout: 10 * time.Minute, Retention: time.Hour, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	lostJob := lose("lost", 2*rescueAfter)
	recentJob := lose("recent", rescueAfter/2)

	if _, err := b.Sweep(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if jobOf("recent") != recentJob {
		t.Error("an operation whose job was taken recently was rescheduled; its worker may be starting it")
	}
	if jobOf("lost") == lostJob {
		t.Fatal("the operation whose job was lost still has it after a sweep")
	}
	var canceled bool
	if err := pool.QueryRow(ctx, "SELECT metadata ? 'cancel_attempted_at' FROM "+jobs+" WHERE id = $1", lostJob).Scan(&canceled); err != nil {
		t.Fatal(err)
	}
	if !canceled {
		t.Error("the lost job was not canceled: River's rescuer would run it again")
	}

	// The new job runs.
	done := make(chan string, 2)
	err = b.Start(ctx, func(ctx context.Context, id string) error {
		if _, err := b.MarkRunning(ctx, id, time.Now()); err != nil {
			return err
		}
		_, err := b.Complete(ctx, id, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: time.Now()})
		done <- id
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-done:
		if id != "lost" {
			t.Errorf("executed %q, want the rescheduled operation", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the rescheduled operation was not executed")
	}
}
