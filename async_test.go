package asyncreply_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

func TestReportProgress(t *testing.T) {
	t.Parallel()

	t.Run("percent is clamped to 0-100", func(t *testing.T) {
		t.Parallel()
		steps := make(chan int)
		defer close(steps) // lets the handler go on to the gate
		reported := make(chan struct{}, 1)
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(http.HandlerFunc(
			func(w http.ResponseWriter, r *http.Request) {
				for {
					select {
					case p, ok := <-steps:
						if !ok {
							g.ServeHTTP(w, r)
							return
						}
						asyncreply.ReportProgress(r.Context(), p, "step")
						reported <- struct{}{}
					case <-r.Context().Done():
						return
					}
				}
			}))))
		_, loc := b.submit(t, http.MethodPost, "/exports", "")

		for _, tc := range []struct{ report, want int }{{150, 100}, {-5, 0}, {70, 70}} {
			send(t, steps, tc.report, "a progress step")
			testwait.Recv(t, reported, "the handler to report progress")
			if doc := decodeDoc(t, b.do(t, http.MethodGet, loc, "")); doc.Progress.Percent != tc.want {
				t.Errorf("ReportProgress(%d): percent = %d, want %d", tc.report, doc.Progress.Percent, tc.want)
			}
		}
	})

	t.Run("any message survives the document and the event stream", func(t *testing.T) {
		t.Parallel()
		const message = "line 1\nline 2\r\n\"quoted\" \\ </script> & \u2028 \x00 \xff é 😀"
		want := strings.ToValidUTF8(message, "\uFFFD")
		reported := make(chan struct{}, 1)
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(http.HandlerFunc(
			func(w http.ResponseWriter, r *http.Request) {
				asyncreply.ReportProgress(r.Context(), 5, message)
				reported <- struct{}{}
				g.ServeHTTP(w, r)
			}))))
		_, loc := b.submit(t, http.MethodPost, "/exports", "")
		testwait.Recv(t, reported, "the handler to report progress")

		if doc := decodeDoc(t, b.do(t, http.MethodGet, loc, "")); doc.Progress.Message != want {
			t.Errorf("polled message = %q, want %q", doc.Progress.Message, want)
		}
		events := b.openEvents(t, loc)
		if _, doc := events.nextStatus(t); doc.Progress.Message != want {
			t.Errorf("event message = %q, want %q", doc.Progress.Message, want)
		}
	})

	t.Run("outside an operation does nothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("GET /sync", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			asyncreply.ReportProgress(r.Context(), 50, "ignored")
			io.WriteString(w, "ok")
		})))
		asyncreply.ReportProgress(context.Background(), 50, "ignored")

		if r := b.do(t, http.MethodGet, "/sync", ""); r.code != http.StatusOK || string(r.body) != "ok" {
			t.Errorf("synchronous handler calling ReportProgress = %s, want 200 ok", r)
		}
	})

	// A change of message alone is a change; a clock that has not moved
	// (coarse clocks, stores that truncate timestamps) must not hide it.
	t.Run("a new message alone is an event", func(t *testing.T) {
		t.Parallel()
		clock := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
		steps, reported := make(chan string), make(chan struct{}, 1)
		defer close(steps) // lets the handler go on to the gate
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.WithClock(asyncreply.Config{}, clock.Now), route("POST /exports", asyncreply.Async(http.HandlerFunc(
			func(w http.ResponseWriter, r *http.Request) {
				for {
					select {
					case msg, ok := <-steps:
						if !ok {
							g.ServeHTTP(w, r)
							return
						}
						asyncreply.ReportProgress(r.Context(), 50, msg)
						reported <- struct{}{}
					case <-r.Context().Done():
						return
					}
				}
			}))))
		_, loc := b.submit(t, http.MethodPost, "/exports", "")
		send(t, steps, "loading", "a progress step")
		testwait.Recv(t, reported, "the first report")
		events := b.openEvents(t, loc)
		if _, doc := events.nextStatus(t); doc.Progress.Message != "loading" {
			t.Fatalf("first event progress = %+v, want loading", doc.Progress)
		}

		send(t, steps, "rendering", "a progress step")
		testwait.Recv(t, reported, "the second report")
		if r := decodeDoc(t, b.do(t, http.MethodGet, loc, "")); r.Progress.Message != "rendering" {
			t.Fatalf("poll progress = %+v, want rendering", r.Progress)
		}
		// The operation stays running: its terminal event, which would carry
		// the last message anyway, must not be what passes this test.
		var messages []string
		for !slices.Contains(messages, "rendering") {
			ev, err := events.next()
			if err != nil {
				t.Fatalf("no event for the change of message to rendering (events since: %q): %v", messages, err)
			}
			messages = append(messages, decodeDocBytes(t, []byte(ev.data)).Progress.Message)
		}
	})
}

func TestRouteOptions(t *testing.T) {
	t.Parallel()
	g := newGate(text("too late"))
	defer g.release.fire()
	mux := http.NewServeMux()
	mux.Handle("POST /slow", asyncreply.AsyncWith(g, asyncreply.RouteOptions{Timeout: 50 * time.Millisecond}))
	mux.Handle("POST /kept", asyncreply.AsyncWith(text("kept"), asyncreply.RouteOptions{Retention: time.Hour}))
	mux.Handle("POST /quick", asyncreply.AsyncWith(text("quick"), asyncreply.RouteOptions{Wait: waitLimit}))
	mux.Handle("POST /other", asyncreply.Async(text("other")))
	mux.HandleFunc("POST /deferred", func(w http.ResponseWriter, r *http.Request) {
		if asyncreply.DeferWith(w, r, asyncreply.RouteOptions{Wait: waitLimit}) {
			return
		}
		io.WriteString(w, "deferred")
	})
	b := setup(t, asyncreply.Config{Retention: time.Minute}, mux)

	t.Run("Timeout", func(t *testing.T) {
		_, loc := b.submit(t, http.MethodPost, "/slow", "")
		testwait.Recv(t, g.ended, "the handler's context to end at the route's timeout")
		wantProblem(t, b.finish(t, loc), http.StatusGatewayTimeout)
	})
	t.Run("Retention", func(t *testing.T) {
		_, loc := b.submit(t, http.MethodPost, "/kept", "")
		r := b.finish(t, loc)
		if r.code != http.StatusSeeOther {
			t.Fatalf("finished poll = %s, want 303", r)
		}
		resp := b.do(t, http.MethodGet, r.header.Get("Location"), "")
		expires, err := http.ParseTime(resp.header.Get("Expires"))
		if err != nil {
			t.Fatalf("response Expires %q: %v", resp.header.Get("Expires"), err)
		}
		// The route keeps it an hour, not the Config's minute.
		if left := time.Until(expires); left < 55*time.Minute || left > 61*time.Minute {
			t.Errorf("response expires in %s, want about the route's 1h retention", left)
		}
	})
	t.Run("Wait", func(t *testing.T) {
		if r := b.do(t, http.MethodPost, "/quick", ""); r.code != http.StatusOK || string(r.body) != "quick" {
			t.Errorf("route with Wait answered %s, want its 200 directly", r)
		}
		if r := b.do(t, http.MethodPost, "/other", ""); r.code != http.StatusAccepted {
			t.Errorf("route without Wait answered %s, want 202 (Config.Wait is 0)", r)
		}
		if r := b.do(t, http.MethodPost, "/deferred", ""); r.code != http.StatusOK || string(r.body) != "deferred" {
			t.Errorf("DeferWith with Wait answered %s, want its 200 directly", r)
		}
	})
	t.Run("negative panics", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Error("AsyncWith with a negative Timeout did not panic")
			}
		}()
		asyncreply.AsyncWith(text("x"), asyncreply.RouteOptions{Timeout: -time.Second})
	})
}
