package asyncreply_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

func TestFailures(t *testing.T) {
	t.Parallel()

	t.Run("panic is a 500 problem and a Failed operation", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("POST /boom", asyncreply.Async(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic("report generator exploded")
		}))))
		_, loc := b.submit(t, http.MethodPost, "/boom", "")

		p := wantProblem(t, b.finish(t, loc), http.StatusInternalServerError)
		if strings.Contains(p.Detail, "exploded") {
			t.Errorf("problem detail %q leaks the panic value", p.Detail)
		}
		wantProblem(t, b.do(t, http.MethodGet, loc+"/response", ""), http.StatusInternalServerError)

		events := b.openEvents(t, loc)
		_, doc := events.nextStatus(t)
		if doc.Status != "Failed" || !doc.Done || doc.Error == nil || doc.Error.Status != http.StatusInternalServerError {
			t.Errorf("status document = %+v, want Failed, done, error with status 500", doc)
		}
		events.wantEnd(t)
	})

	t.Run("browsers see the failure status on a page that stops refreshing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("GET /boom", asyncreply.Async(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic("boom")
		}))))
		_, loc := b.submit(t, http.MethodGet, "/boom", "")
		b.finish(t, loc)

		r := b.do(t, http.MethodGet, loc, "", "Accept", "text/html")
		if r.code != http.StatusInternalServerError || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
			t.Fatalf("browser poll of a failed operation = %s, want a 500 HTML page", r)
		}
		if metaRefresh.Match(r.body) {
			t.Errorf("failure page still refreshes itself:\n%s", r.body)
		}
	})

	t.Run("Timeout is a 504 problem", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("too late"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{Timeout: 50 * time.Millisecond}, route("POST /slow", asyncreply.Async(g)))
		_, loc := b.submit(t, http.MethodPost, "/slow", "")

		testwait.Recv(t, g.ended, "the handler's context to end at the timeout")
		wantProblem(t, b.finish(t, loc), http.StatusGatewayTimeout)
	})

	t.Run("response over MaxResponseBytes is a 500 problem", func(t *testing.T) {
		t.Parallel()
		const limit = 1000
		b := setup(t, asyncreply.Config{MaxResponseBytes: limit}, route("GET /size/{n}", asyncreply.Async(http.HandlerFunc(
			func(w http.ResponseWriter, r *http.Request) {
				n, _ := strconv.Atoi(r.PathValue("n"))
				for range n / 100 {
					w.Write(bytes.Repeat([]byte("x"), 100)) // the error is ignored, as careless handlers do
				}
			}))))

		_, over := b.submit(t, http.MethodGet, "/size/1500", "")
		p := wantProblem(t, b.finish(t, over), http.StatusInternalServerError)
		if !strings.Contains(p.Detail, strconv.Itoa(limit)) {
			t.Errorf("problem detail %q does not mention the limit %d", p.Detail, limit)
		}
		wantProblem(t, b.do(t, http.MethodGet, over+"/response", ""), http.StatusInternalServerError)

		_, exact := b.submit(t, http.MethodGet, "/size/1000", "")
		if r := b.finish(t, exact); r.code != http.StatusSeeOther {
			t.Fatalf("a response of exactly the limit: poll = %s, want 303", r)
		}
		if r := b.do(t, http.MethodGet, exact+"/response", ""); r.code != http.StatusOK || len(r.body) != limit {
			t.Errorf("a response of exactly the limit = %d with %d bytes, want 200 with %d", r.code, len(r.body), limit)
		}
	})

	t.Run("request over MaxRequestBytes is 413 and stores nothing", func(t *testing.T) {
		t.Parallel()
		const limit = 100
		spy := newSpy()
		var runs atomic.Int32
		app := route("POST /upload", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			runs.Add(1)
			io.Copy(io.Discard, r.Body)
		})))
		app.HandleFunc("POST /sync", func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, n)
		})
		b := setup(t, asyncreply.Config{Backend: spy, MaxRequestBytes: limit}, app)

		wantProblem(t, b.do(t, http.MethodPost, "/upload", strings.Repeat("y", limit+1)), http.StatusRequestEntityTooLarge)
		if n := spy.createdCount(); n != 0 {
			t.Errorf("%d operations stored for a rejected request", n)
		}

		_, loc := b.submit(t, http.MethodPost, "/upload", strings.Repeat("y", limit))
		if r := b.finish(t, loc); r.code != http.StatusSeeOther {
			t.Errorf("a body of exactly the limit: poll = %s, want 303", r)
		}
		// The limit is for recorded requests: synchronous ones read it all.
		big := strings.Repeat("z", 10*limit)
		if r := b.do(t, http.MethodPost, "/sync", big); r.code != http.StatusOK || string(r.body) != strconv.Itoa(len(big)) {
			t.Errorf("synchronous upload of %d bytes = %s, want 200 %d", len(big), r, len(big))
		}
		if n := runs.Load(); n != 1 {
			t.Errorf("handler ran %d times, want once (only for the accepted request)", n)
		}
	})
}

// An application's own error response is a successful operation: the client
// is redirected to it and gets it verbatim.
func TestHandlerErrorResponseIsStoredVerbatim(t *testing.T) {
	t.Parallel()
	for _, code := range []int{http.StatusNotFound, http.StatusInternalServerError} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			b := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(
				func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("X-Reason", "app says so")
					http.Error(w, "no report "+r.PathValue("id"), code)
				}))))
			_, loc := b.submit(t, http.MethodGet, "/reports/7", "")

			if r := b.finish(t, loc); r.code != http.StatusSeeOther {
				t.Fatalf("poll = %s, want 303: the operation got its answer", r)
			}
			r := b.do(t, http.MethodGet, loc+"/response", "")
			if r.code != code || string(r.body) != "no report 7\n" || r.header.Get("X-Reason") != "app says so" ||
				r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Errorf("response = %s (X-Reason %q), want the handler's own %d", r, r.header.Get("X-Reason"), code)
			}
		})
	}
}
