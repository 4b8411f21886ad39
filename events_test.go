package asyncreply_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

func TestEvents(t *testing.T) {
	t.Parallel()

	t.Run("status at every change until done", func(t *testing.T) {
		t.Parallel()
		report, reported := newSignal(), make(chan struct{}, 1)
		defer report.fire()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(http.HandlerFunc(
			func(w http.ResponseWriter, r *http.Request) {
				g.started <- ""
				if report.wait(r.Context()) {
					asyncreply.ReportProgress(r.Context(), 50, "halfway")
					reported <- struct{}{}
				}
				g.ServeHTTP(w, r)
			}))))
		_, loc := b.submit(t, http.MethodPost, "/exports", "")
		testwait.Recv(t, g.started, "the handler to start")

		events := b.openEvents(t, loc)
		if ct := events.resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Errorf("Content-Type = %q, want text/event-stream", ct)
		}
		_, doc := events.nextStatus(t)
		if doc.ID != opID(t, loc) || doc.Status != "Running" || doc.Done {
			t.Errorf("first event = %+v, want the running operation's document", doc)
		}

		report.fire()
		testwait.Recv(t, reported, "the handler to report progress")
		for doc.Progress.Percent != 50 {
			_, doc = events.nextStatus(t)
		}
		if doc.Progress.Message != "halfway" || doc.Status != "Running" {
			t.Errorf("progress event = %+v, want Running 50%% halfway", doc)
		}

		g.release.fire()
		for !doc.Done {
			_, doc = events.nextStatus(t)
		}
		if doc.Status != "Succeeded" || doc.Links.Response != loc+"/response" {
			t.Errorf("terminal event = %+v, want Succeeded with links.response", doc)
		}
		events.wantEnd(t)
	})

	t.Run("a finished operation sends one event and ends", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(text("done"))))
		_, loc := b.submit(t, http.MethodPost, "/exports", "")
		b.finish(t, loc)

		events := b.openEvents(t, loc)
		last, doc := events.nextStatus(t)
		if doc.Status != "Succeeded" || last.id == "" {
			t.Errorf("event = %+v (id %q), want Succeeded with an id", doc, last.id)
		}
		events.wantEnd(t)

		// An EventSource reconnects after the stream ends; having seen the
		// terminal event, it is told to stop.
		if r := b.do(t, http.MethodGet, loc+"/events", "", "Last-Event-ID", last.id); r.code != http.StatusNoContent {
			t.Errorf("reconnect with the terminal event's ID = %s, want 204", r)
		}
	})
}
