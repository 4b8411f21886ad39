package postgres_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/internal/benchutil"
	"github.com/asyncreply/asyncreply/internal/testdb"
	"github.com/asyncreply/asyncreply/internal/testprocess"
)

// The multi-process test runs this test binary again as the processes of a
// deployment, in the schema schemaVariable names.
const (
	schemaVariable = "ASYNCREPLY_TEST_SCHEMA"
	roleAccept     = "accept" // serves HTTP, accepts and answers polls, executes nothing
	roleWork       = "work"   // executes operations, serves nothing
)

var roles = map[string]func() int{
	roleAccept: func() int { return runRole(roleAccept) },
	roleWork:   func() int { return runRole(roleWork) },
}

// heartbeat is how often the test's processes record that they are alive:
// the jobs of the worker killed mid-run are rescheduled once it has been
// silent for six beats, at the next sweep — long before River would
// rescue them, after the operations' default timeout of ten minutes.
const heartbeat = 200 * time.Millisecond

// runRole runs one process of the multi-process test until it is killed or
// told to stop, and returns its exit code.
func runRole(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pool, err := pgxpool.New(ctx, testdb.URL())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	pg, err := postgres.New(ctx, postgres.Config{
		Pool: pool, Schema: os.Getenv(schemaVariable), Logger: logger,
		HeartbeatInterval: heartbeat, SkipMigrations: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ar, err := asyncreply.New(asyncreply.Config{
		Backend: pg, Logger: logger, Key: benchutil.Key, SweepInterval: heartbeat,
		AcceptOnly: role == roleAccept, // as a web process beside separate workers
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	mux.Handle("POST /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // a slow report, long enough for a kill to land mid-run
		case <-time.After(200 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "report %s of %s", r.PathValue("id"), body)
	})))
	handler := ar.Handler(mux)
	defer ar.Shutdown(context.Background())

	if role == roleWork {
		fmt.Println("ready")
		<-ctx.Done()
		return 0
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: handler}
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	fmt.Println("ready http://" + ln.Addr().String())
	srv.Serve(ln)
	return 0
}

// Two accepting processes and two workers share PostgreSQL. 200 operations
// are accepted (more, should one worker run them all before the other has
// started); one worker is killed with SIGKILL while it runs some of
// them. Every accepted operation still reaches its terminal state, once,
// with its own response, and a poll on either accepting process sees it.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and waits for River to rescue a killed worker's jobs")
	}
	t.Parallel()
	pool := testdb.Pool(t, 4)
	schema := testdb.Schema(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := postgres.Migrate(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}
	env := schemaVariable + "=" + schema
	accepters := []*testprocess.Process{testprocess.Start(t, roleAccept, env), testprocess.Start(t, roleAccept, env)}
	doomed := testprocess.Start(t, roleWork, env)
	testprocess.Start(t, roleWork, env)

	const batch = 200
	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	var locations []string
	submit := func() {
		first := len(locations)
		locations = append(locations, make([]string, batch)...)
		var wg sync.WaitGroup
		errs := make(chan error, batch)
		for i := first; i < first+batch; i++ {
			wg.Go(func() {
				resp, err := client.Post(fmt.Sprintf("%s/reports/%d", accepters[i%2].Ready, i), "text/plain", strings.NewReader(fmt.Sprint("body ", i)))
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					errs <- fmt.Errorf("submit %d: status %d", i, resp.StatusCode)
					return
				}
				// Poll through the other accepting process.
				locations[i] = strings.Replace(resp.Header.Get("Location"), accepters[i%2].Ready, accepters[(i+1)%2].Ready, 1)
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	submit()

	// Kill a worker in the middle of runs: once some operations finished,
	// while both workers run others — the one killed among them. A worker
	// slow to start may find the other has run a whole batch already: then
	// another batch is submitted, until both run at once.
	table := schema + ".asyncreply_operation"
	for deadline := time.Now().Add(time.Minute); ; {
		var finished, running, runners int
		err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE op.status = 'Succeeded'), count(*) FILTER (WHERE op.status = 'Running'),
				count(DISTINCT job.attempted_by[cardinality(job.attempted_by)]) FILTER (WHERE op.status = 'Running' AND job.state = 'running')
			FROM `+table+` AS op JOIN `+schema+`.river_job AS job ON job.id = op.job_id`).Scan(&finished, &running, &runners)
		if err != nil {
			t.Fatal(err)
		}
		if finished >= 20 && runners == 2 {
			t.Logf("killing a worker with %d operations finished and %d running", finished, running)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers made no progress: %d finished, %d running", finished, running)
		}
		if finished == len(locations) && len(locations) < 5*batch {
			submit()
			continue
		}
		time.Sleep(20 * time.Millisecond) // watching a database, not synchronising goroutines
	}
	doomed.Kill(t)

	for i, location := range locations {
		body, err := testprocess.AwaitResponse(client, location, 2*time.Minute)
		if err != nil {
			t.Fatalf("operation %d: %v", i, err)
		}
		if want := fmt.Sprintf("report %d of body %d", i, i); body != want {
			t.Errorf("operation %d: response %q, want %q", i, body, want)
		}
	}
	var succeeded, retried int
	err := pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE status = 'Succeeded' AND response IS NOT NULL), count(*) FILTER (WHERE attempt > 1) FROM "+table).Scan(&succeeded, &retried)
	if err != nil {
		t.Fatal(err)
	}
	if succeeded != len(locations) {
		t.Errorf("%d operations succeeded with a stored response, want %d", succeeded, len(locations))
	}
	if retried == 0 {
		t.Error("no operation was retried: the killed worker was running none, so the test proved nothing")
	}
	t.Logf("%d operations, %d of them replayed again after the worker died", succeeded, retried)
}
