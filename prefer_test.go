package asyncreply_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

func TestPreferWait(t *testing.T) {
	t.Parallel()
	fast := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Answer", "direct")
		io.WriteString(w, "fast answer")
	})
	wantDirect := func(t *testing.T, r reply) {
		t.Helper()
		if r.code != http.StatusOK || string(r.body) != "fast answer" || r.header.Get("X-Answer") != "direct" {
			t.Errorf("answer = %s, want the handler's 200 fast answer directly", r)
		}
		if r.header.Get("Location") != "" {
			t.Errorf("direct answer has Location %q", r.header.Get("Location"))
		}
	}

	t.Run("on submit returns a ready answer directly", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("POST /quick", asyncreply.Async(fast)))

		r := b.do(t, http.MethodPost, "/quick", "", "Prefer", "wait="+waitSeconds())

		wantDirect(t, r)
		if !headerHas(r.header, "Vary", "Prefer") {
			t.Errorf("Vary = %q, want it to list Prefer", r.header.Values("Vary"))
		}
	})

	t.Run("Config.Wait returns a ready answer directly", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{Wait: waitLimit}, route("POST /quick", asyncreply.Async(fast)))

		wantDirect(t, b.do(t, http.MethodPost, "/quick", ""))
	})

	t.Run("a failure within the wait is answered directly", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("POST /boom", asyncreply.Async(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic("boom")
		}))))

		wantProblem(t, b.do(t, http.MethodPost, "/boom", "", "Prefer", "wait="+waitSeconds()), http.StatusInternalServerError)
	})

	t.Run("MaxWait caps a long wait", func(t *testing.T) {
		t.Parallel()
		g := newGate(fast)
		defer g.release.fire()
		b := setup(t, asyncreply.Config{MaxWait: 50 * time.Millisecond}, route("POST /slow", asyncreply.Async(g)))

		start := time.Now()
		_, loc := b.submit(t, http.MethodPost, "/slow", "", "Prefer", "wait=60")
		if r := b.do(t, http.MethodGet, loc, "", "Prefer", "wait=60"); r.code != http.StatusAccepted {
			t.Errorf("long-poll = %s, want 202 after MaxWait", r)
		}
		if elapsed := time.Since(start); elapsed > waitLimit {
			t.Errorf("submit and poll took %s with MaxWait 50ms", elapsed)
		}
	})

	t.Run("on a poll waits for completion", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		g := newGate(fast)
		defer g.release.fire()
		b := setup(t, asyncreply.Config{Backend: spy}, route("POST /slow", asyncreply.Async(g)))
		_, loc := b.submit(t, http.MethodPost, "/slow", "")
		id := testwait.Recv(t, g.started, "the handler to start")

		polled := make(chan reply, 1)
		go func() {
			r, err := b.send(b.request(t, http.MethodGet, loc, "", "Prefer", "wait="+waitSeconds()))
			if err != nil {
				r = reply{body: []byte(err.Error())}
			}
			polled <- r
		}()
		if got := testwait.Recv(t, spy.watched, "the poll to start waiting"); got != id {
			t.Fatalf("watched operation %q, want %q", got, id)
		}
		g.release.fire()

		r := testwait.Recv(t, polled, "the long-poll to answer")
		if r.code != http.StatusSeeOther || r.header.Get("Location") != loc+"/response" {
			t.Errorf("long-poll = %s (Location %q), want 303 to the response", r, r.header.Get("Location"))
		}
	})
}
