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
	t.Cleanup(upstream.Close)
	config := writeConfig(t, "max-queued: 2\n")
	srv := serveGateway(t, "--config", config, "--upstream", upstream.URL, "--async", "POST /exports",
		"--backend", "memory:", "--concurrency", "1", "--owner", "header:X-User", "--max-queued-per-owner", "1")
	defer close(release)
	client := &http.Client{Timeout: time.Minute}
	submit := func(user string, want int) {
		t.Helper()
		resp := sendAs(t, client, http.MethodPost, srv.URL+"/exports", user)
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

// --max-watches and --max-watches-per-owner reach the library: past one
// owner's bound that owner's next event stream is answered 429, past the
// total another owner's 503, both with Retry-After, while the streams
// opened before stay open.
func TestMaxWatchesFlagsReachTheLibrary(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // every operation stays running, so that its stream stays open
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(upstream.Close)
	srv := serveGateway(t, "--upstream", upstream.URL, "--async", "POST /exports", "--backend", "memory:",
		"--owner", "header:X-User", "--max-watches", "2", "--max-watches-per-owner", "1")
	transport := &http.Transport{}
	client := &http.Client{Transport: transport, Timeout: time.Minute}
	var open []io.Closer
	defer func() {
		for _, body := range open {
			body.Close()
		}
		transport.CloseIdleConnections()
		close(release)
	}()
	submit := func(user string) string {
		t.Helper()
		resp := sendAs(t, client, http.MethodPost, srv.URL+"/exports", user)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit by %s: %d, want 202", user, resp.StatusCode)
		}
		return resp.Header.Get("Location")
	}
	// stream opens the event stream of monitor as user. Its head arrives
	// once the stream is counted: the bound is taken before it is written.
	stream := func(user, monitor string, want int) {
		t.Helper()
		resp := sendAs(t, client, http.MethodGet, monitor+"/events", user)
		if resp.StatusCode == http.StatusOK {
			open = append(open, resp.Body) // held open until the test ends
		} else {
			resp.Body.Close()
		}
		if resp.StatusCode != want {
			t.Fatalf("event stream by %s: %d, want %d", user, resp.StatusCode, want)
		}
		if want != http.StatusOK && resp.Header.Get("Retry-After") == "" {
			t.Errorf("event stream by %s: %d without Retry-After", user, resp.StatusCode)
		}
	}

	alice, bob, carol := submit("alice"), submit("bob"), submit("carol")
	stream("alice", alice, http.StatusOK)
	stream("alice", alice, http.StatusTooManyRequests)
	stream("bob", bob, http.StatusOK)
	stream("carol", carol, http.StatusServiceUnavailable)
}

// serveGateway serves the gateway that args configure on a test server,
// closed and the gateway shut down when the test ends.
func serveGateway(t *testing.T, args ...string) *httptest.Server {
	t.Helper()
	o, err := parseGateway(args, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := newGateway(context.Background(), o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(func() {
		srv.Close()
		gw.Shutdown(context.Background())
	})
	return srv
}

// sendAs sends a request without a body as user, the owner --owner
// header:X-User names, and returns the response, its body unread.
func sendAs(t *testing.T, client *http.Client, method, url, user string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-User", user)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
