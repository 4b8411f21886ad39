package asyncreply_test

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

func TestMaxWatches(t *testing.T) {
	t.Parallel()

	t.Run("in total", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{MaxWatches: 2}, route("GET /reports/{id}", asyncreply.Async(g)))
		_, first := b.submit(t, http.MethodGet, "/reports/1", "")
		testwait.Recv(t, g.started, "the first replay to start")

		streams := []*sseStream{b.openEvents(t, first), b.openEvents(t, first)}
		for _, s := range streams {
			s.nextStatus(t)
		}
		refused := []reply{
			b.do(t, http.MethodGet, first+"/events", ""),
			b.do(t, http.MethodGet, first, "", "Prefer", "wait=5"),
			b.do(t, http.MethodGet, first+"/status", "", "Prefer", "wait=5"),
		}
		for _, r := range refused {
			wantProblem(t, r, http.StatusServiceUnavailable)
			if r.header.Get("Retry-After") == "" {
				t.Errorf("refusal without Retry-After: %s", r)
			}
		}
		if r := b.do(t, http.MethodGet, asyncreply.DefaultPrefix+"healthz", ""); r.code != http.StatusOK {
			t.Errorf("healthz with every watch taken = %s, want 200", r)
		}
		if r := b.do(t, http.MethodGet, first, ""); r.code != http.StatusAccepted {
			t.Errorf("a poll that does not wait = %s, want 202", r)
		}
		// A submit asking to wait is stored and answered at once: were it
		// to wait, this request would outlast its deadline, since the
		// operation cannot finish while the gate is shut.
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		req := b.request(t, http.MethodGet, "/reports/2", "", "Prefer", "wait=60").WithContext(ctx)
		if r, err := b.send(req); err != nil || r.code != http.StatusAccepted {
			t.Errorf("submit with Prefer: wait past the bound = %v %v, want 202 at once", r, err)
		}

		// The streams end with the operation; their places are free again
		// by the time a client has read each to its end.
		g.release.fire()
		for _, s := range streams {
			for {
				if _, err := s.next(); err == io.EOF {
					break
				} else if err != nil {
					t.Fatalf("reading the stream to its end: %v", err)
				}
			}
		}
		b.openEvents(t, first).nextStatus(t)
	})

	t.Run("per owner", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{Owner: userFromHeader, MaxWatchesPerOwner: 1}, route("GET /reports/{id}", asyncreply.Async(g)))
		_, alices := b.submit(t, http.MethodGet, "/reports/1", "", "X-User", "alice")
		_, bobs := b.submit(t, http.MethodGet, "/reports/2", "", "X-User", "bob")

		b.openEvents(t, alices, "X-User", "alice").nextStatus(t)
		r := b.do(t, http.MethodGet, alices, "", "X-User", "alice", "Prefer", "wait=5")
		wantProblem(t, r, http.StatusTooManyRequests)
		if r.header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After: %s", r)
		}
		b.openEvents(t, bobs, "X-User", "bob").nextStatus(t)
	})
}
