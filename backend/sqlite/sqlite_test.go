package sqlite_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendtest"
	"github.com/asyncreply/asyncreply/backend/sqlite"
	"github.com/asyncreply/asyncreply/internal/testprocess"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// TestMain fails the run if a backend (its River client, its poller, its
// database) leaves a goroutine behind once every backend has been stopped.
func TestMain(m *testing.M) {
	testprocess.Role(roles) // when run as the server of the restart test
	goleak.VerifyTestMain(m)
}

// newPath returns a database file of the test's own.
func newPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "asyncreply.db")
}

// newBackend returns a backend on the file at path, stopped at the end of the
// test. Backends on one path stand for processes sharing the file: each has
// its own *sql.DB.
func newBackend(t testing.TB, path string) *sqlite.Backend {
	t.Helper()
	return newBackendWith(t, sqlite.Config{Path: path})
}

// newBackendWith returns a backend configured by cfg, logging nowhere,
// stopped at the end of the test.
func newBackendWith(t testing.TB, cfg sqlite.Config) *sqlite.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.Logger = slog.New(slog.DiscardHandler)
	b, err := sqlite.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
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
	backendtest.Run(t, func(t *testing.T) backend.Backend { return newBackend(t, newPath(t)) })
}

// Two backends on one file, as a gateway and a worker process are: each sees
// the other's operations, and a watcher in one wakes for changes made by the
// other.
func TestProcessesShareOperations(t *testing.T) {
	t.Parallel()
	path := newPath(t)
	gateway, worker := newBackend(t, path), newBackend(t, path)

	t.Run("OperationsAreVisible", func(t *testing.T) {
		fromGateway := newOperation()
		mustCreate(t, gateway, fromGateway)
		fromWorker := newOperation()
		mustCreate(t, worker, fromWorker)
		for _, get := range []struct {
			what string
			b    backend.Backend
			id   string
		}{
			{"the worker's Get of the gateway's operation", worker, fromGateway.ID},
			{"the gateway's Get of the worker's operation", gateway, fromWorker.ID},
		} {
			if _, err := get.b.Get(t.Context(), get.id); err != nil {
				t.Errorf("%s: %v", get.what, err)
			}
		}
	})

	t.Run("IdempotencyKeyIsShared", func(t *testing.T) {
		first := newOperation()
		first.IdempotencyKey = "key-" + newID()
		mustCreate(t, gateway, first)
		retry := newOperation()
		retry.Owner, retry.IdempotencyKey = first.Owner, first.IdempotencyKey
		stored, created, err := worker.Create(t.Context(), retry)
		if err != nil {
			t.Fatalf("Create in the other process with a reused key: %v", err)
		}
		if created || stored.ID != first.ID {
			t.Errorf("Create in the other process with a reused key: got %q created %v, want the existing %q", stored.ID, created, first.ID)
		}
	})

	t.Run("WatchWakesOnOtherProcessesChanges", func(t *testing.T) {
		// A watch kept open throughout keeps the gateway following changes,
		// and the operations of the rounds are completed from NotStarted, so
		// that no wake-up left from an earlier change passes for the
		// completion's: each round measures the poller, not a leftover.
		barrier := newOperation()
		mustCreate(t, gateway, barrier)
		following, stop, err := gateway.Watch(t.Context(), barrier.ID)
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		defer stop()
		if _, err := worker.MarkRunning(t.Context(), barrier.ID, time.Now()); err != nil {
			t.Fatalf("MarkRunning in the other process: %v", err)
		}
		waitUntil(t, gateway, barrier.ID, following, func(op *backend.Operation) bool { return op.Status == backend.Running })

		const rounds = 20
		latencies := make([]time.Duration, 0, rounds)
		for range rounds {
			op := newOperation()
			mustCreate(t, gateway, op)
			changes, stop, err := gateway.Watch(t.Context(), op.ID)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			completing := time.Now()
			if _, err := worker.Complete(t.Context(), op.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: time.Now()}); err != nil {
				t.Fatalf("Complete in the other process: %v", err)
			}
			for {
				testwait.Recv(t, changes, "a wake-up for a completion in another process")
				if got, err := gateway.Get(t.Context(), op.ID); err != nil {
					t.Fatalf("Get: %v", err)
				} else if got.Status == backend.Succeeded {
					break
				}
			}
			latencies = append(latencies, time.Since(completing))
			stop()
		}
		slices.Sort(latencies)
		t.Logf("wake-up latency of a watcher for a completion in another process, over %d rounds: min %v, median %v, max %v (PollInterval %v)",
			rounds, latencies[0], latencies[rounds/2], latencies[rounds-1], sqlite.DefaultPollInterval)
	})

	// Watch, then Get, must see the final state however a completion in
	// another process interleaves with it, also as the poller resumes from
	// idle with the watch.
	t.Run("WatchNeverLosesOtherProcessesFinalWakeUp", func(t *testing.T) {
		for i := range 50 {
			op := newOperation()
			mustCreate(t, gateway, op)
			if _, err := worker.MarkRunning(t.Context(), op.ID, time.Now()); err != nil {
				t.Fatalf("MarkRunning: %v", err)
			}
			finished := make(chan error, 1)
			go func() {
				if i%2 == 0 {
					_, err := worker.Complete(t.Context(), op.ID, backend.Outcome{Status: backend.Succeeded, At: time.Now()})
					finished <- err
				} else {
					finished <- worker.Cancel(t.Context(), op.ID, time.Now())
				}
			}()
			changes, stop, err := gateway.Watch(t.Context(), op.ID)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			waitUntil(t, gateway, op.ID, changes, func(op *backend.Operation) bool { return op.Status.Done() })
			stop()
			if err := testwait.Recv(t, finished, "the completion in the other process"); err != nil {
				t.Fatalf("completion in the other process: %v", err)
			}
		}
	})
}

// An operation accepted by a process that does not execute (a gateway) runs
// on the workers of another process on the file, whether it was created
// before that process started or after.
func TestOtherProcessExecutes(t *testing.T) {
	t.Parallel()
	path := newPath(t)
	gateway, worker := newBackend(t, path), newBackend(t, path)

	before := newOperation()
	mustCreate(t, gateway, before)

	var mu sync.Mutex
	executed := make(map[string]chan struct{}) // closed at an ID's first execution
	calledFor := func(id string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		if executed[id] == nil {
			executed[id] = make(chan struct{})
		}
		return executed[id]
	}
	var closeOnce sync.Map
	execute := func(ctx context.Context, id string) error {
		once, _ := closeOnce.LoadOrStore(id, &sync.Once{})
		defer once.(*sync.Once).Do(func() { close(calledFor(id)) })
		if _, err := worker.MarkRunning(ctx, id, time.Now()); err != nil {
			return err
		}
		_, err := worker.Complete(ctx, id, backend.Outcome{Status: backend.Succeeded, Response: []byte("done by the worker"), At: time.Now()})
		return err
	}
	if err := worker.Start(t.Context(), execute); err != nil {
		t.Fatalf("Start: %v", err)
	}
	after := newOperation()
	mustCreate(t, gateway, after)

	for _, op := range []*backend.Operation{before, after} {
		changes, stop, err := gateway.Watch(t.Context(), op.ID)
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		testwait.Recv(t, calledFor(op.ID), "the worker process to execute the gateway's operation")
		got := waitUntil(t, gateway, op.ID, changes, func(op *backend.Operation) bool { return op.Status.Done() })
		stop()
		if got.Status != backend.Succeeded || string(got.Response) != "done by the worker" || got.Attempt != 1 {
			t.Errorf("operation executed by the other process: status %q response %q attempt %d", got.Status, got.Response, got.Attempt)
		}
	}
}

// Cancel in the gateway process cancels the execution running in the worker
// process, with cause ErrCanceled, and the operation is never executed again.
func TestCancelReachesOtherProcess(t *testing.T) {
	t.Parallel()
	path := newPath(t)
	gateway, worker := newBackend(t, path), newBackend(t, path)

	op, probe := newOperation(), newOperation()
	started := make(chan struct{}, 1)
	causes := make(chan error, 1)
	probed := make(chan struct{}, 1)
	var mu sync.Mutex
	calls := 0
	execute := func(ctx context.Context, id string) error {
		if id == probe.ID {
			select {
			case probed <- struct{}{}:
			default:
			}
			return nil
		}
		mu.Lock()
		calls++
		mu.Unlock()
		if _, err := worker.MarkRunning(ctx, id, time.Now()); err != nil {
			return err
		}
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		select {
		case causes <- context.Cause(ctx):
		default:
		}
		return context.Cause(ctx)
	}
	if err := worker.Start(t.Context(), execute); err != nil {
		t.Fatalf("Start: %v", err)
	}
	mustCreate(t, gateway, op)
	testwait.Recv(t, started, "the worker process to start executing the operation")

	canceling := time.Now()
	if err := gateway.Cancel(t.Context(), op.ID, time.Now()); err != nil {
		t.Fatalf("Cancel in the gateway process: %v", err)
	}
	if cause := testwait.Recv(t, causes, "the execution in the worker process to be canceled"); !errors.Is(cause, backend.ErrCanceled) {
		t.Errorf("context.Cause of the execution canceled from another process = %v, want backend.ErrCanceled", cause)
	}
	t.Logf("latency of a cancellation reaching the execution in another process: %v", time.Since(canceling))

	// Executed after the abandoned attempt has been recorded, and Stop waits
	// for every execution: a retry would have happened by then.
	mustCreate(t, gateway, probe)
	testwait.Recv(t, probed, "the execution of an operation created after the cancellation")
	if err := worker.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("the operation canceled from another process was executed %d times, want 1", calls)
	}
}

// Sweep fails the operations whose River job was discarded, which no worker
// would ever finish, and watchers in other processes learn of it.
func TestSweepFailsAbandonedOperations(t *testing.T) {
	t.Parallel()
	path := newPath(t)
	gateway, sweeper := newBackend(t, path), newBackend(t, path)
	abandoned := []*backend.Operation{newOperation(), newOperation(), newOperation()}
	for _, op := range abandoned {
		mustCreate(t, gateway, op)
	}
	changes, stop, err := gateway.Watch(t.Context(), abandoned[1].ID)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer stop()

	// What River does once a job's attempts are used up by dying workers.
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), "UPDATE river_job SET state = 'discarded', finalized_at = CURRENT_TIMESTAMP"); err != nil {
		t.Fatalf("discarding the jobs: %v", err)
	}

	sweptAt := time.Now().Truncate(time.Microsecond)
	if n, err := sweeper.Sweep(t.Context(), sweptAt); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v; want 0 (nothing expired yet), nil", n, err)
	}
	for _, op := range abandoned {
		got, err := gateway.Get(t.Context(), op.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got.Status != backend.Failed || got.Failure == nil || got.Failure.Status != 503 || len(got.Request) != 0 ||
			!got.ExpiresAt.Equal(sweptAt.Add(op.Retention)) {
			t.Errorf("operation whose job was discarded, after Sweep: status %q failure %+v request %d bytes expires %v",
				got.Status, got.Failure, len(got.Request), got.ExpiresAt)
		}
	}
	// Each row changed by the one statement took a change counter value of
	// its own, the last being the counter's, for pollers to find.
	var distinct, last, counter int64
	if err := db.QueryRowContext(t.Context(), `SELECT count(DISTINCT version), max(version), (SELECT version FROM asyncreply_change)
		FROM asyncreply_operation`).Scan(&distinct, &last, &counter); err != nil {
		t.Fatalf("reading the versions: %v", err)
	}
	if distinct != int64(len(abandoned)) || last != counter {
		t.Errorf("after one statement changed %d operations: %d distinct versions, the last %d; change counter %d",
			len(abandoned), distinct, last, counter)
	}
	waitUntil(t, gateway, abandoned[1].ID, changes, func(op *backend.Operation) bool { return op.Status == backend.Failed })
}

// Sweep gives a new job, fetched before the jobs waiting for their first
// attempt, to the operations whose process died: one whose lock file is
// free, however recent its heartbeat, or, when it has no lock file to
// test (it runs elsewhere), one silent for six heartbeats. The
// operations of a process whose heartbeat is recent and whose lock cannot
// be tested are left to it.
func TestSweepReschedulesDeadProcesses(t *testing.T) {
	t.Parallel()
	path := newPath(t)
	b := newBackend(t, path)
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	silent, unlocked, elsewhere := "silent", "unlocked", "elsewhere"
	now := time.Now()
	for id, seen := range map[string]time.Time{silent: now.Add(-time.Hour), unlocked: now, elsewhere: now} {
		if _, err := db.ExecContext(t.Context(), "INSERT INTO asyncreply_process (id, seen_at) VALUES (?, ?)", id, seen.UnixMicro()); err != nil {
			t.Fatal(err)
		}
	}
	// The lock file of a process that died: nobody holds it.
	lockDir := path + "-processes"
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lockDir, unlocked), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	jobOf := func(op *backend.Operation) (job int64, priority int) {
		t.Helper()
		if err := db.QueryRowContext(t.Context(), `SELECT job.id, job.priority FROM asyncreply_operation AS op
			JOIN river_job AS job ON job.id = op.job_id WHERE op.id = ?`, op.ID).Scan(&job, &priority); err != nil {
			t.Fatal(err)
		}
		return job, priority
	}
	ran := map[string]*backend.Operation{silent: newOperation(), unlocked: newOperation(), elsewhere: newOperation()}
	taken := map[string]int64{}
	for process, op := range ran {
		mustCreate(t, b, op)
		job, _ := jobOf(op)
		taken[process] = job
		if _, err := db.ExecContext(t.Context(), `UPDATE river_job SET state = 'running', attempt = 1,
			attempted_by = json_array(?), attempted_at = CURRENT_TIMESTAMP WHERE id = ?`, process, job); err != nil {
			t.Fatal(err)
		}
	}
	waiting := newOperation()
	mustCreate(t, b, waiting)
	_, firstPriority := jobOf(waiting)

	if _, err := b.Sweep(t.Context(), time.Now()); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	for process, rescheduled := range map[string]bool{silent: true, unlocked: true, elsewhere: false} {
		job, priority := jobOf(ran[process])
		switch {
		case rescheduled && job == taken[process]:
			t.Errorf("the operation of process %s, dead, was not given a new job", process)
		case rescheduled && priority >= firstPriority:
			t.Errorf("the new job of process %s's operation has priority %d, not ahead of the waiting jobs' %d", process, priority, firstPriority)
		case !rescheduled && job != taken[process]:
			t.Errorf("the operation of process %s, alive as far as anyone can tell, was given a new job", process)
		}
	}
	if _, err := os.Stat(filepath.Join(lockDir, unlocked)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the free lock file of a dead process is still there after Sweep: %v", err)
	}
	var records int
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM asyncreply_process WHERE id IN (?, ?)", silent, unlocked).Scan(&records); err != nil {
		t.Fatal(err)
	}
	if records != 0 {
		t.Errorf("%d records of dead processes left after Sweep, want 0", records)
	}
}

// Processes that start together on a new file migrate it together.
func TestConcurrentNewMigratesOnce(t *testing.T) {
	t.Parallel()
	path := newPath(t)
	const n = 4
	backends := make([]*sqlite.Backend, n)
	errs := make([]error, n)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-begin
			backends[i], errs[i] = sqlite.New(t.Context(), sqlite.Config{Path: path, Logger: slog.New(slog.DiscardHandler)})
		})
	}
	close(begin)
	wg.Wait()
	for i, b := range backends {
		if b != nil {
			t.Cleanup(func() {
				if err := b.Stop(context.Background()); err != nil {
					t.Errorf("Stop: %v", err)
				}
			})
		}
		if errs[i] != nil {
			t.Errorf("New %d of %d on one new file: %v", i, n, errs[i])
		}
	}
	if t.Failed() {
		return
	}
	op := newOperation()
	mustCreate(t, backends[0], op)
	if _, err := backends[n-1].Get(t.Context(), op.ID); err != nil {
		t.Errorf("Get: %v", err)
	}
}

// A file locked by another process for longer than the caller waits is an
// outage: Create fails with ErrUnavailable and stores nothing.
func TestLockedFileIsUnavailable(t *testing.T) {
	t.Parallel()
	path := newPath(t)
	b := newBackend(t, path)

	other, err := sqlite.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer other.Close()
	lock, err := other.BeginTx(t.Context(), nil) // takes the write lock
	if err != nil {
		t.Fatalf("BeginTx: %v", err)
	}
	op := newOperation()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, _, err = b.Create(ctx, op)
	if !errors.Is(err, backend.ErrUnavailable) {
		t.Errorf("Create while another process holds the write lock: %v, want ErrUnavailable", err)
	}
	if err := lock.Rollback(); err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	if _, err := b.Get(t.Context(), op.ID); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Get of the operation whose Create failed: %v, want ErrNotFound", err)
	}
}

// Stop releases everything, but the operations stay in the file and calls
// after Stop still reach them, as the contract allows callers to make.
func TestStop(t *testing.T) {
	t.Parallel()
	b, err := sqlite.New(t.Context(), sqlite.Config{Path: newPath(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	before := newOperation()
	mustCreate(t, b, before)
	if err := b.Stop(t.Context()); err != nil {
		t.Errorf("Stop without Start: %v", err)
	}
	if err := b.Stop(t.Context()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := b.Get(t.Context(), before.ID); err != nil {
		t.Errorf("Get after Stop of an operation created before: %v", err)
	}
	after := newOperation()
	mustCreate(t, b, after)
	if _, err := b.MarkRunning(t.Context(), after.ID, time.Now()); err != nil {
		t.Errorf("MarkRunning after Stop: %v", err)
	}
	if err := b.Cancel(t.Context(), after.ID, time.Now()); err != nil {
		t.Errorf("Cancel after Stop: %v", err)
	}
	if _, err := b.Get(t.Context(), newID()); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Get after Stop of an unknown ID: %v, want ErrNotFound", err)
	}
}

func TestNewRequiresPath(t *testing.T) {
	t.Parallel()
	if _, err := sqlite.New(t.Context(), sqlite.Config{}); err == nil {
		t.Error("New without Path returned no error")
	}
}

// ---- helpers ----

func newID() string {
	id := make([]byte, 16)
	rand.Read(id)
	return base64.RawURLEncoding.EncodeToString(id)
}

func newOperation() *backend.Operation {
	now := time.Now().Truncate(time.Microsecond)
	return &backend.Operation{
		ID:        newID(),
		Owner:     "owner-" + newID(),
		Request:   []byte("request"),
		Timeout:   time.Minute,
		Retention: time.Hour,
		CreatedAt: now,
		UpdatedAt: now,
	}
}

func mustCreate(t *testing.T, b backend.Backend, op *backend.Operation) {
	t.Helper()
	if _, created, err := b.Create(t.Context(), op); err != nil || !created {
		t.Fatalf("Create: created %v, error %v", created, err)
	}
}

// waitUntil re-reads the operation after every wake-up, as watchers do,
// until done reports true, and returns it.
func waitUntil(t *testing.T, b backend.Backend, id string, changes <-chan struct{}, done func(*backend.Operation) bool) *backend.Operation {
	t.Helper()
	for {
		op, err := b.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if done(op) {
			return op
		}
		testwait.Recv(t, changes, "a wake-up for a change made in another process")
	}
}

// Creates that arrive together share a transaction; one that fails (here, a
// duplicate ID) fails alone, and every other is stored.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	t.Parallel()
	b := newBackend(t, newPath(t))
	duplicate := newOperation()
	mustCreate(t, b, duplicate)

	const creates = 64
	errs := make(chan error, creates)
	ids := make(chan string, creates)
	var wg sync.WaitGroup
	for i := range creates {
		wg.Go(func() {
			op := newOperation()
			if i%8 == 0 {
				op.ID = duplicate.ID
			}
			_, _, err := b.Create(t.Context(), op)
			if err == nil {
				ids <- op.ID
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	close(ids)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed != creates/8 {
		t.Errorf("%d Creates failed, want exactly the %d with a duplicate ID", failed, creates/8)
	}
	for id := range ids {
		if _, err := b.Get(t.Context(), id); err != nil {
			t.Errorf("a Create that succeeded is not stored: %v", err)
		}
	}
}
