package asyncreply_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

func TestShutdown(t *testing.T) {
	t.Parallel()

	t.Run("refuses new operations with 503", func(t *testing.T) {
		t.Parallel()
		app := http.NewServeMux()
		app.Handle("POST /exports", asyncreply.Async(text("done")))
		app.Handle("GET /ping", text("pong"))
		b := setup(t, asyncreply.Config{}, app)
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := b.shutdown(ctx); err != nil {
			t.Fatalf("Shutdown with nothing running = %v", err)
		}

		r := b.do(t, http.MethodPost, "/exports", "")
		wantProblem(t, r, http.StatusServiceUnavailable)
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("503 Retry-After = %q, want seconds", r.header.Get("Retry-After"))
		}
		if r := b.do(t, http.MethodGet, "/ping", ""); r.code != http.StatusOK {
			t.Errorf("synchronous route after Shutdown = %s, want 200", r)
		}
	})

	t.Run("cancels running operations when its context ends", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("never"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))
		b.submit(t, http.MethodPost, "/exports", "")
		testwait.Recv(t, g.started, "the handler to start")

		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		returned := make(chan error, 1)
		go func() { returned <- b.shutdown(ctx) }()

		testwait.Recv(t, g.ended, "the handler's context to be canceled")
		if err := testwait.Recv(t, returned, "Shutdown to return"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want its context's error", err)
		}
	})

	t.Run("lets running operations finish and ends event streams", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("finished during shutdown"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))
		_, loc := b.submit(t, http.MethodPost, "/exports", "")
		testwait.Recv(t, g.started, "the handler to start")
		events := b.openEvents(t, loc)
		events.nextStatus(t)

		returned := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			returned <- b.shutdown(ctx)
		}()
		events.wantEnd(t)
		g.release.fire()

		if err := testwait.Recv(t, returned, "Shutdown to return"); err != nil {
			t.Errorf("Shutdown = %v, want nil: the operation finished in time", err)
		}
		if r := b.do(t, http.MethodGet, loc, ""); r.code != http.StatusSeeOther {
			t.Fatalf("poll after Shutdown = %s, want 303", r)
		}
		if r := b.do(t, http.MethodGet, loc+"/response", ""); string(r.body) != "finished during shutdown" {
			t.Errorf("response = %s, want the handler's", r)
		}
	})
}

// Shutdown's doc says to call it after http.Server.Shutdown, and that it is
// what ends event streams and long-polls. http.Server.Shutdown waits for
// those requests to end, so in that order it must not be left waiting.
func TestShutdownInTheDocumentedOrder(t *testing.T) {
	t.Parallel()
	g := newGate(text("done"))
	defer g.release.fire()
	b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))
	_, loc := b.submit(t, http.MethodPost, "/exports", "")
	testwait.Recv(t, g.started, "the handler to start")
	events := b.openEvents(t, loc)
	events.nextStatus(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.srv.Config.Shutdown(ctx); err != nil {
		t.Errorf("http.Server.Shutdown with an event stream open = %v, want nil", err)
	}
	g.release.fire()
	stopCtx, stop := context.WithTimeout(context.Background(), waitLimit)
	defer stop()
	if err := b.shutdown(stopCtx); err != nil {
		t.Errorf("Middleware.Shutdown = %v", err)
	}
}

// No 202 without a stored operation: a store outage is a 503 the client may
// retry.
func TestBackendOutage(t *testing.T) {
	t.Parallel()
	store := &flakyBackend{Backend: memory.New(memory.Config{})}
	var runs atomic.Int32
	b := setup(t, asyncreply.Config{Backend: store}, route("POST /exports", asyncreply.Async(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			runs.Add(1)
			io.WriteString(w, "done")
		}))))
	_, loc := b.submit(t, http.MethodPost, "/exports", "")
	b.finish(t, loc)

	store.down.Store(true)
	for _, tc := range []struct{ method, target string }{
		{http.MethodPost, "/exports"}, {http.MethodGet, loc}, {http.MethodGet, loc + "/response"},
	} {
		r := b.do(t, tc.method, tc.target, "")
		wantProblem(t, r, http.StatusServiceUnavailable)
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s %s: 503 without Retry-After", tc.method, tc.target)
		}
		if bytes.Contains(r.body, []byte("connection refused")) {
			t.Errorf("%s %s: problem leaks the store's error: %s", tc.method, tc.target, r.body)
		}
	}

	store.down.Store(false)
	if r := b.do(t, http.MethodGet, loc+"/response", ""); string(r.body) != "done" {
		t.Errorf("response after the outage = %s, want done", r)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want once: nothing was accepted during the outage", n)
	}
}
