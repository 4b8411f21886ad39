package cli

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendurl"
	"github.com/asyncreply/asyncreply/gateway"
	"github.com/asyncreply/asyncreply/internal/testprocess"
)

// A gateway that only accepts (--accept-only) and a worker sharing its
// SQLite file: the gateway never starts executing its backend, and the
// operation completes because the worker replays it.
func TestWorkerExecutesWhatAGatewayAccepted(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "report from "+r.URL.Path)
	}))
	defer upstream.Close()
	path := filepath.Join(t.TempDir(), "asyncreply.db")

	o, err := parseGateway([]string{"--upstream", upstream.URL, "--async", "GET /reports/{id}", "--backend", "sqlite://" + path, "--accept-only"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := gatewayConfig(o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	be, err := backendurl.Open(t.Context(), o.backend, backendurl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Backend = executesNothing{be, t}
	gw, err := gateway.New(cfg)
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
	body, err := testprocess.AwaitResponse(client, resp.Header.Get("Location"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if body != "report from /reports/7" {
		t.Errorf("response %q, want the upstream's answer to the replay", body)
	}
}

// executesNothing is the backend of a process that must execute no
// operation: its Start, where a backend begins executing, fails the test.
type executesNothing struct {
	backend.Backend
	t *testing.T
}

func (b executesNothing) Start(ctx context.Context, execute backend.ExecuteFunc) error {
	b.t.Error("the accept-only gateway started executing operations")
	return b.Backend.Start(ctx, execute)
}
