package cli

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// --max-queued, here from the config file, and --max-queued-per-owner
// reach the backend: past one owner's bound the gateway answers 429, past
// the total 503, both with Retry-After, while the upstream's one replay
// holds the one worker.
func TestMaxQueuedFlagsReachTheBackend(t *testing.T) {
	t.Parallel()
	replaying, release := make(chan struct{}, 1), make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case replaying <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer upstream.Close()
	config := writeConfig(t, "max-queued: 2\n")
	o, err := parseGateway([]string{"--config", config, "--upstream", upstream.URL, "--async", "POST /exports",
		"--backend", "memory:", "--concurrency", "1", "--owner", "header:X-User", "--max-queued-per-owner", "1"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := newGateway(context.Background(), o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	defer func() {
		close(release)
		srv.Close()
		gw.Shutdown(context.Background())
	}()
	client := &http.Client{Timeout: time.Minute}
	submit := func(user string, want int) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/exports", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-User", user)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("submit by %s: %d, want %d", user, resp.StatusCode, want)
		}
		if want != http.StatusAccepted && resp.Header.Get("Retry-After") == "" {
			t.Errorf("submit by %s: %d without Retry-After", user, resp.StatusCode)
		}
	}

	submit("carol", http.StatusAccepted)
	select {
	case <-replaying: // carol's operation holds the worker: it no longer waits
	case <-time.After(time.Minute):
		t.Fatal("the first operation was never replayed")
	}
	submit("alice", http.StatusAccepted)
	submit("alice", http.StatusTooManyRequests)
	submit("bob", http.StatusAccepted)
	submit("dave", http.StatusServiceUnavailable)
}
