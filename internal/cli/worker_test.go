package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/internal/testprocess"
)

// A gateway that only accepts (--accept-only) and a worker sharing its
// SQLite file: the operation waits until the worker starts, and completes
// because the worker replays it.
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
	gw, err := newGateway(context.Background(), o, slog.New(slog.DiscardHandler))
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
	// A gateway that executed would have finished it by now.
	time.Sleep(300 * time.Millisecond)
	if status := statusOf(t, client, resp.Header.Get("Location")); status != "NotStarted" {
		t.Fatalf("status %q before any worker runs, want NotStarted: the accept-only gateway executed it", status)
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

// statusOf is the status in the operation's status document.
func statusOf(t *testing.T, client *http.Client, location string) string {
	t.Helper()
	resp, err := client.Get(location)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct{ Status string }
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("status document of %s (%d): %v", location, resp.StatusCode, err)
	}
	return doc.Status
}
