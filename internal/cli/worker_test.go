package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend/sqlite"
	"github.com/asyncreply/asyncreply/gateway"
	"github.com/asyncreply/asyncreply/internal/benchutil"
	"github.com/asyncreply/asyncreply/internal/testprocess"
)

// A gateway that only accepts and a worker sharing its SQLite file: the
// operation completes only because the worker replays it.
func TestWorkerExecutesWhatAGatewayAccepted(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "report from "+r.URL.Path)
	}))
	defer upstream.Close()
	path := filepath.Join(t.TempDir(), "asyncreply.db")

	ctx, stopWorker := context.WithCancel(context.Background())
	var worker sync.WaitGroup
	var workerLog bytes.Buffer
	worker.Go(func() {
		if code := Run(ctx, []string{"worker", "--upstream", upstream.URL, "--backend", "sqlite://" + path}, env(nil), io.Discard, &workerLog); code != exitOK {
			t.Errorf("worker exited %d: %s", code, workerLog.String())
		}
	})
	defer func() {
		stopWorker()
		worker.Wait()
	}()

	be, err := sqlite.New(context.Background(), sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Upstream: upstream.URL, Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}, Backend: benchutil.AcceptOnly{Backend: be}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	defer func() {
		srv.Close()
		gw.Shutdown(context.Background())
	}()
	client := &http.Client{Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(srv.URL + "/reports/7")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d, want 202", resp.StatusCode)
	}
	body, err := testprocess.AwaitResponse(client, resp.Header.Get("Location"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if body != "report from /reports/7" {
		t.Errorf("response %q, want the upstream's answer to the replay", body)
	}
}
