package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/sqlite"
	"github.com/asyncreply/asyncreply/internal/testprocess"
)

// The restart test runs this test binary again as a server on the database
// file pathVariable names, listening at addrVariable.
const (
	pathVariable = "ASYNCREPLY_TEST_DB"
	addrVariable = "ASYNCREPLY_TEST_ADDR"
	roleServe    = "serve"
)

var roles = map[string]func() int{roleServe: serve}

// serve accepts and executes operations on the SQLite file, as the gateway's
// embedded default does, until it is killed or receives SIGTERM. Its
// heartbeat and sweep are the defaults: a killed process's operations are
// run again by the process restarted in its place, or beside it, because
// its lock is free, not after its silence (30 s) and the next sweep (15 s).
func serve() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	be, err := sqlite.New(ctx, sqlite.Config{Path: os.Getenv(pathVariable), Concurrency: 10, Logger: logger})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ar, err := asyncreply.New(asyncreply.Config{Backend: be, Logger: logger, Key: make([]byte, 32)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	mux.Handle("POST /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Which process runs it, for the test to tell whose operations a
		// kill interrupted.
		asyncreply.ReportProgress(r.Context(), 1, fmt.Sprint(runningIn, os.Getpid()))
		select { // a slow report: the kill lands while some run and others wait
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "report %s of %s", r.PathValue("id"), body)
	})))
	ln, err := net.Listen("tcp", os.Getenv(addrVariable))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: ar.Handler(mux)}
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
		ar.Shutdown(context.Background())
	}()
	fmt.Println("ready http://" + ln.Addr().String())
	srv.Serve(ln)
	return 0
}

// runningIn prefixes the progress message a report's replay sets: the
// process ID follows.
const runningIn = "running in process "

// reexecutionLimit is how soon after a killed process's restart the
// operations it was running must run again. The heartbeat rule alone
// would take six missed beats and a sweep, about 45 s at the defaults;
// knowing the process dead at start takes well under a second on a quiet
// machine (the tests log it). The limit sits between the two with room for
// a loaded one, so that it fails on the heartbeat path, not on a busy CI.
const reexecutionLimit = 10 * time.Second

var client = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// submitReports submits operations reports, each to one of bases in turn,
// and returns their monitor URLs.
func submitReports(t *testing.T, operations int, bases ...string) []string {
	t.Helper()
	locations := make([]string, operations)
	var wg sync.WaitGroup
	errs := make(chan error, operations)
	for i := range operations {
		wg.Go(func() {
			resp, err := client.Post(fmt.Sprintf("%s/reports/%d", bases[i%len(bases)], i), "text/plain", strings.NewReader(fmt.Sprint("body ", i)))
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				errs <- fmt.Errorf("submit %d: status %d", i, resp.StatusCode)
				return
			}
			locations[i] = resp.Header.Get("Location")
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return locations
}

// awaitReports checks that every operation completes with its own response.
func awaitReports(t *testing.T, locations []string) {
	t.Helper()
	for i, location := range locations {
		body, err := testprocess.AwaitResponse(client, location, 2*time.Minute)
		if err != nil {
			t.Fatalf("operation %d: %v", i, err)
		}
		if want := fmt.Sprintf("report %d of body %d", i, i); body != want {
			t.Errorf("operation %d: response %q, want %q", i, body, want)
		}
	}
}

// running is an unfinished operation whose River job a process had taken.
type running struct {
	attempt int
	job     int64
	process int // the OS process running it, when its replay has said
}

// runningOperations reads the operations whose jobs processes have taken
// and not finished.
func runningOperations(t *testing.T, db *sql.DB) map[string]running {
	t.Helper()
	rows, err := db.Query(`SELECT op.id, op.attempt, op.job_id, op.progress_message FROM asyncreply_operation AS op
		JOIN river_job AS job ON job.id = op.job_id
		WHERE op.status IN ('NotStarted', 'Running') AND job.state = 'running'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ops := map[string]running{}
	for rows.Next() {
		var id, progress string
		var r running
		if err := rows.Scan(&id, &r.attempt, &r.job, &progress); err != nil {
			t.Fatal(err)
		}
		if pid, ok := strings.CutPrefix(progress, runningIn); ok {
			r.process, _ = strconv.Atoi(pid)
		}
		ops[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ops
}

// awaitRunningIn waits until operations run in each of processes.
func awaitRunningIn(t *testing.T, db *sql.DB, processes ...*testprocess.Process) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		runners := map[int]bool{}
		for _, r := range runningOperations(t, db) {
			runners[r.process] = true
		}
		all := true
		for _, p := range processes {
			all = all && runners[p.Cmd.Process.Pid]
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the processes ran no operations within a minute")
		}
		time.Sleep(10 * time.Millisecond) // watching a file, not synchronising goroutines
	}
}

// awaitReexecution waits until each of ops has begun another attempt, and
// returns how long after since that was.
func awaitReexecution(t *testing.T, db *sql.DB, ops map[string]running, since time.Time) time.Duration {
	t.Helper()
	for deadline := since.Add(time.Minute); ; {
		left := 0
		for id, r := range ops {
			var attempt int
			if err := db.QueryRow("SELECT attempt FROM asyncreply_operation WHERE id = ?", id).Scan(&attempt); err != nil {
				t.Fatal(err)
			}
			if attempt <= r.attempt {
				left++
			}
		}
		if left == 0 {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d operations the killed process ran had not run again a minute after its restart", left, len(ops))
		}
		time.Sleep(10 * time.Millisecond) // watching a file, not synchronising goroutines
	}
}

// openFile opens the database file the test's processes share.
func openFile(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// 100 operations are accepted by a server on a SQLite file; the server is
// killed with SIGKILL while it runs some and others wait, then restarted on
// the same file. The operations it was running run again within
// reexecutionLimit of the restart — its lock tells the restarted process at
// once that it is gone — and all 100 complete, each with its own response.
func TestRestartAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and kills one")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "asyncreply.db")
	first := testprocess.Start(t, roleServe, pathVariable+"="+path, addrVariable+"=127.0.0.1:0")
	base := first.Ready
	locations := submitReports(t, 100, base)

	db := openFile(t, path)
	awaitRunningIn(t, db, first)
	first.Kill(t)
	interrupted := runningOperations(t, db)
	if len(interrupted) == 0 {
		t.Fatal("the killed process was running no operation: the test would prove nothing")
	}

	restarted := time.Now()
	testprocess.Start(t, roleServe, pathVariable+"="+path, addrVariable+"="+strings.TrimPrefix(base, "http://"))
	took := awaitReexecution(t, db, interrupted, restarted)
	if took > reexecutionLimit {
		t.Errorf("the %d operations the killed process ran ran again %v after its restart, want within %v", len(interrupted), took, reexecutionLimit)
	}
	t.Logf("the %d operations the killed process ran ran again %v after its restart", len(interrupted), took.Round(time.Millisecond))
	awaitReports(t, locations)
}

// Two processes execute operations on one file; one is killed and
// restarted. The operations the killed one was running run again within
// reexecutionLimit of the restart, and those the other was running are
// left to it: they complete in their first attempt, with their first job.
func TestRestartBesideLiveProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and kills one")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "asyncreply.db")
	doomed := testprocess.Start(t, roleServe, pathVariable+"="+path, addrVariable+"=127.0.0.1:0")
	survivor := testprocess.Start(t, roleServe, pathVariable+"="+path, addrVariable+"=127.0.0.1:0")
	locations := submitReports(t, 100, doomed.Ready, survivor.Ready)
	for i, location := range locations { // polled through the survivor
		locations[i] = strings.Replace(location, doomed.Ready, survivor.Ready, 1)
	}

	db := openFile(t, path)
	awaitRunningIn(t, db, doomed, survivor)
	doomed.Kill(t)
	interrupted, others := map[string]running{}, map[string]running{}
	for id, r := range runningOperations(t, db) {
		switch r.process {
		case doomed.Cmd.Process.Pid:
			interrupted[id] = r
		case survivor.Cmd.Process.Pid:
			others[id] = r
		}
	}
	if len(interrupted) == 0 || len(others) == 0 {
		t.Fatalf("running when the kill landed: %d operations in the killed process, %d in the live one; the test needs both", len(interrupted), len(others))
	}

	restarted := time.Now()
	testprocess.Start(t, roleServe, pathVariable+"="+path, addrVariable+"=127.0.0.1:0")
	took := awaitReexecution(t, db, interrupted, restarted)
	if took > reexecutionLimit {
		t.Errorf("the %d operations the killed process ran ran again %v after its restart, want within %v", len(interrupted), took, reexecutionLimit)
	}
	awaitReports(t, locations)
	for id, r := range others {
		var attempt int
		var job int64
		if err := db.QueryRow("SELECT attempt, job_id FROM asyncreply_operation WHERE id = ?", id).Scan(&attempt, &job); err != nil {
			t.Fatal(err)
		}
		if attempt != r.attempt || job != r.job {
			t.Errorf("operation %s, running in the live process, was run again: attempt %d → %d, job %d → %d", id, r.attempt, attempt, r.job, job)
		}
	}
	t.Logf("the %d operations the killed process ran ran again %v after its restart; the %d the live one ran were left to it",
		len(interrupted), took.Round(time.Millisecond), len(others))
}
