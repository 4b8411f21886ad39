package sqlite_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
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

// heartbeat is how often the restart test's process records that it is
// alive: the jobs the killed process was running are rescheduled by the
// restarted one once the dead one has been silent for six beats — long
// before River would rescue them, after the operations' default timeout of
// ten minutes.
const heartbeat = 200 * time.Millisecond

var roles = map[string]func() int{roleServe: serve}

// serve accepts and executes operations on the SQLite file, as the gateway's
// embedded default does, until it is killed or receives SIGTERM.
func serve() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	be, err := sqlite.New(ctx, sqlite.Config{Path: os.Getenv(pathVariable), Concurrency: 10, HeartbeatInterval: heartbeat, Logger: logger})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ar, err := asyncreply.New(asyncreply.Config{Backend: be, Logger: logger, Key: make([]byte, 32), SweepInterval: heartbeat})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	mux.Handle("POST /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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

// 100 operations are accepted by a server on a SQLite file; the server is
// killed with SIGKILL while it runs some and others wait, then restarted on
// the same file. All 100 complete, each with its own response.
func TestRestartAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and waits for River to rescue a killed process's jobs")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "asyncreply.db")
	first := testprocess.Start(t, roleServe, pathVariable+"="+path, addrVariable+"=127.0.0.1:0")
	base := first.Ready

	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	const operations = 100
	locations := make([]string, operations)
	var wg sync.WaitGroup
	errs := make(chan error, operations)
	for i := range operations {
		wg.Go(func() {
			resp, err := client.Post(fmt.Sprintf("%s/reports/%d", base, i), "text/plain", strings.NewReader(fmt.Sprint("body ", i)))
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

	// Kill the server in the middle of runs: while some operations run.
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for deadline := time.Now().Add(time.Minute); ; {
		var running int
		if err := db.QueryRow("SELECT count(*) FROM asyncreply_operation WHERE status = 'Running'").Scan(&running); err != nil {
			t.Fatal(err)
		}
		if running > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no operation started running within a minute")
		}
		time.Sleep(10 * time.Millisecond) // watching a file, not synchronising goroutines
	}
	first.Kill(t)
	testprocess.Start(t, roleServe, pathVariable+"="+path, addrVariable+"="+strings.TrimPrefix(base, "http://"))

	start := time.Now()
	for i, location := range locations {
		body, err := testprocess.AwaitResponse(client, location, 2*time.Minute)
		if err != nil {
			t.Fatalf("operation %d: %v", i, err)
		}
		if want := fmt.Sprintf("report %d of body %d", i, i); body != want {
			t.Errorf("operation %d: response %q, want %q", i, body, want)
		}
	}
	var retried int
	if err := db.QueryRow("SELECT count(*) FROM asyncreply_operation WHERE attempt > 1").Scan(&retried); err != nil {
		t.Fatal(err)
	}
	if retried == 0 {
		t.Error("no operation ran twice: the killed process was running none, so the test proved nothing about rescue")
	}
	t.Logf("all %d operations completed %s after the restart; %d were running when the process died and ran again",
		operations, time.Since(start).Round(100*time.Millisecond), retried)
}
