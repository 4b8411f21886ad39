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

// A job River marked running is replaced by a new job at the next sweep,
// rather than waiting out the operation's timeout for River's rescuer, when
// the process that took it has stopped recording itself alive (it was
// killed), or when its operation is still NotStarted long after (the
// fetch's answer was lost with a broken connection); a job a live process
// took recently is left to it.
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
	processes := pgx.Identifier{schema, "asyncreply_process"}.Sanitize()
	if _, err := pool.Exec(ctx, "INSERT INTO "+processes+` (id, seen_at) VALUES
		('alive', now()), ('dead', now() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	jobOf := func(id string) int64 {
		t.Helper()
		var job int64
		if err := pool.QueryRow(ctx, "SELECT job_id FROM "+ops+" WHERE id = $1", id).Scan(&job); err != nil {
			t.Fatal(err)
		}
		return job
	}
	// take marks an operation's job as taken by process, ago, and the
	// operation as status.
	take := func(id, process string, ago time.Duration, status backend.Status) int64 {
		t.Helper()
		job := jobOf(id)
		if _, err := pool.Exec(ctx, "UPDATE "+jobs+` SET state = 'running', attempt = 1, attempted_by = ARRAY[$2],
			attempted_at = now() - $3 * interval '1 microsecond' WHERE id = $1`, job, process, ago.Microseconds()); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, "UPDATE "+ops+" SET status = $2 WHERE id = $1", id, status); err != nil {
			t.Fatal(err)
		}
		return job
	}
	now := time.Now()
	for _, id := range []string{"lost", "recent", "running", "orphaned"} {
		if _, _, err := b.Create(ctx, &backend.Operation{ID: id, Status: backend.NotStarted, Timeout: 10 * time.Minute, Retention: time.Hour, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	lostJob := take("lost", "alive", 2*rescueAfter, backend.NotStarted)
	recentJob := take("recent", "alive", rescueAfter/2, backend.NotStarted)
	runningJob := take("running", "alive", 2*rescueAfter, backend.Running)
	orphanedJob := take("orphaned", "dead", time.Second, backend.Running)
	if _, err := b.Sweep(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if jobOf("recent") != recentJob {
		t.Error("an operation whose job a live process took recently was rescheduled; the process may be starting it")
	}
	if jobOf("running") != runningJob {
		t.Error("an operation a live process is running was rescheduled")
	}
	for id, old := range map[string]int64{"lost": lostJob, "orphaned": orphanedJob} {
		if jobOf(id) == old {
			t.Errorf("operation %q still has its lost job after a sweep", id)
			continue
		}
		var canceled bool
		if err := pool.QueryRow(ctx, "SELECT metadata ? 'cancel_attempted_at' FROM "+jobs+" WHERE id = $1", old).Scan(&canceled); err != nil {
			t.Fatal(err)
		}
		if !canceled {
			t.Errorf("the lost job of %q was not canceled: River's rescuer would run it again", id)
		}
		var resumed, first int
		if err := pool.QueryRow(ctx, "SELECT (SELECT priority FROM "+jobs+" WHERE id = $1), (SELECT priority FROM "+jobs+" WHERE id = $2)",
			jobOf(id), recentJob).Scan(&resumed, &first); err != nil {
			t.Fatal(err)
		}
		if resumed >= first {
			t.Errorf("the new job of %q has priority %d, not fetched before the jobs waiting for a first attempt (%d)", id, resumed, first)
		}
	}
	var dead int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+processes+" WHERE id = 'dead'").Scan(&dead); err != nil || dead != 0 {
		t.Errorf("the dead process's record is still there (%d, %v)", dead, err)
	}

	// The new jobs run.
	done := make(chan string, 4)
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
	executed := map[string]bool{}
	for range 2 {
		select {
		case id := <-done:
			executed[id] = true
		case <-time.After(20 * time.Second):
			t.Fatalf("the rescheduled operations were not executed; executed %v", executed)
		}
	}
	if !executed["lost"] || !executed["orphaned"] {
		t.Errorf("executed %v, want the two rescheduled operations", executed)
	}
}
