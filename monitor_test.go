package asyncreply_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

func TestMonitorURLAnswersAsSoonAsAccepted(t *testing.T) {
	t.Parallel()
	g := newGate(text("done"))
	defer g.release.fire()
	b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))

	for i := range 20 {
		_, loc := b.submit(t, http.MethodPost, "/exports", strconv.Itoa(i))
		for range 10 {
			r := b.do(t, http.MethodGet, loc, "")
			if r.code != http.StatusAccepted {
				t.Fatalf("operation %d: GET %s right after its 202 = %s, want 202", i, loc, r)
			}
		}
	}
}

func TestPoll(t *testing.T) {
	t.Parallel()
	const retention = time.Hour
	started := make(chan struct{}, 1)
	report, reported, release := newSignal(), make(chan struct{}, 1), newSignal()
	defer report.fire()
	defer release.fire()
	respond := func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/csv; charset=utf-8")
		h.Set("X-Report-Rows", "2")
		h.Add("X-Multi", "a")
		h.Add("X-Multi", "b")
		http.SetCookie(w, &http.Cookie{Name: "last-report", Value: "q3", Path: "/"})
		http.SetCookie(w, &http.Cookie{Name: "theme", Value: "dark"})
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "region,total\nnorth,42\n")
	}
	app := route("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		if !report.wait(r.Context()) {
			return
		}
		asyncreply.ReportProgress(r.Context(), 40, "querying warehouse")
		reported <- struct{}{}
		if !release.wait(r.Context()) {
			return
		}
		respond(w, r)
	})))
	b := setup(t, asyncreply.Config{Retention: retention}, app)

	_, loc := b.submit(t, http.MethodGet, "/reports/q3", "")
	testwait.Recv(t, started, "the handler to start")

	for i := range 3 {
		r := b.do(t, http.MethodGet, loc, "")
		if r.code != http.StatusAccepted {
			t.Fatalf("poll %d while running = %s, want 202", i, r)
		}
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("poll %d: Retry-After = %q, want seconds", i, r.header.Get("Retry-After"))
		}
		if doc := decodeDoc(t, r); doc.Status != "Running" || doc.Done {
			t.Errorf("poll %d: status %q done %t, want Running, not done (the handler is running)", i, doc.Status, doc.Done)
		}
	}

	report.fire()
	testwait.Recv(t, reported, "the handler to report progress")
	r := b.do(t, http.MethodGet, loc, "")
	if r.code != http.StatusAccepted {
		t.Fatalf("poll after progress = %s, want 202", r)
	}
	doc := decodeDoc(t, r)
	if doc.Progress.Percent != 40 || doc.Progress.Message != "querying warehouse" {
		t.Errorf("progress = %+v, want 40%% querying warehouse", doc.Progress)
	}
	if doc.ExpiresAt != nil || doc.Links.Response != "" {
		t.Errorf("running document has expiresAt %v, links.response %q; want neither", doc.ExpiresAt, doc.Links.Response)
	}

	release.fire()
	finished := b.finish(t, loc)
	if finished.code != http.StatusSeeOther {
		t.Fatalf("poll after completion = %s, want 303", finished)
	}
	if got := finished.header.Get("Location"); got != loc+"/response" {
		t.Errorf("303 Location = %q, want %q", got, loc+"/response")
	}
	doneDoc := decodeDoc(t, finished)
	checkKeys(t, "finished status document", objectOf(t, finished.body),
		"id", "status", "done", "createdAt", "updatedAt", "expiresAt", "progress", "resourceLocation", "links")
	if doneDoc.Status != "Succeeded" || !doneDoc.Done || doneDoc.ExpiresAt == nil || doneDoc.Links.Response != loc+"/response" {
		t.Errorf("finished document = %+v, want Succeeded, done, expiresAt and links.response set", doneDoc)
	}

	resp := b.do(t, http.MethodGet, loc+"/response", "")
	want := httptest.NewRecorder()
	respond(want, httptest.NewRequest(http.MethodGet, "/reports/q3", nil))
	if resp.code != http.StatusCreated || string(resp.body) != want.Body.String() {
		t.Fatalf("GET response = %s, want 201 with the handler's body %q", resp, want.Body)
	}
	for _, name := range []string{"Content-Type", "X-Report-Rows", "X-Multi", "Set-Cookie"} {
		if got, want := resp.header.Values(name), want.Header().Values(name); !slices.Equal(got, want) {
			t.Errorf("stored response %s = %q, want the handler's %q", name, got, want)
		}
	}
	expires, err := http.ParseTime(resp.header.Get("Expires"))
	if err != nil {
		t.Fatalf("Expires = %q: %v", resp.header.Get("Expires"), err)
	}
	if !expires.Equal(doneDoc.ExpiresAt.Truncate(time.Second)) {
		t.Errorf("Expires = %v, want the document's expiresAt %v", expires, doneDoc.ExpiresAt)
	}
	if d := time.Until(expires); d < retention-time.Minute || d > retention+time.Minute {
		t.Errorf("Expires is %s away, want about the retention %s", d, retention)
	}

	head := b.do(t, http.MethodHead, loc+"/response", "")
	if head.code != http.StatusCreated || len(head.body) != 0 || head.header.Get("X-Report-Rows") != "2" {
		t.Errorf("HEAD response = %s with X-Report-Rows %q, want 201, no body, the stored headers", head, head.header.Get("X-Report-Rows"))
	}
	if head := b.do(t, http.MethodHead, loc, ""); head.code != http.StatusSeeOther || head.header.Get("Location") != loc+"/response" {
		t.Errorf("HEAD status = %d, Location %q; want 303 to the response", head.code, head.header.Get("Location"))
	}
}

// A client that knows nothing of asyncreply but follows redirects and polls
// while it sees 202 gets what a synchronous call would have returned.
func TestRedirectFollowingClientGetsTheSynchronousResponse(t *testing.T) {
	t.Parallel()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "abc-123")
		w.Header().Set("Cache-Control", "private, max-age=60")
		http.SetCookie(w, &http.Cookie{Name: "seen", Value: "1", Path: "/", HttpOnly: true})
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"method":%q,"query":%q,"body":%q}`, r.Method, r.URL.RawQuery, body)
	})
	plain := httptest.NewServer(handler)
	t.Cleanup(plain.Close)
	b := setup(t, asyncreply.Config{}, route("POST /orders", asyncreply.Async(handler)))

	call := func(client *http.Client, base string) reply {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/orders?priority=high", strings.NewReader(`{"sku":"X1"}`))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		monitor := resp.Header.Get("Location")
		for polls := 0; resp.StatusCode == http.StatusAccepted; polls++ {
			resp.Body.Close()
			if polls == 5 {
				t.Fatalf("still 202 after %d polls", polls)
			}
			req, _ := http.NewRequest(http.MethodGet, monitor, nil)
			req.Header.Set("Prefer", "wait="+waitSeconds())
			if resp, err = client.Do(req); err != nil {
				t.Fatalf("GET %s: %v", monitor, err)
			}
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Header.Del("Date")
		return reply{code: resp.StatusCode, header: resp.Header, body: body}
	}
	follower := &http.Client{Transport: b.client.Transport, Timeout: 3 * waitLimit}
	sync := call(plain.Client(), plain.URL)
	async := call(follower, b.srv.URL)

	if async.header.Get("Expires") == "" {
		t.Error("the stored response has no Expires header")
	}
	async.header.Del("Expires")
	if async.code != sync.code || !bytes.Equal(async.body, sync.body) || !reflect.DeepEqual(async.header, sync.header) {
		t.Errorf("asynchronous answer differs from the synchronous one:\n async %d %v %s\n  sync %d %v %s",
			async.code, async.header, async.body, sync.code, sync.header, sync.body)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()

	wantGone := func(t *testing.T, b *bundle, loc string) {
		t.Helper()
		wantProblem(t, b.do(t, http.MethodGet, loc, ""), http.StatusNotFound)
		wantProblem(t, b.do(t, http.MethodGet, loc+"/response", ""), http.StatusNotFound)
		wantProblem(t, b.do(t, http.MethodGet, loc+"/events", ""), http.StatusNotFound)
		wantProblem(t, b.do(t, http.MethodDelete, loc, ""), http.StatusNotFound)
	}

	t.Run("running cancels the handler", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("never"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))
		_, loc := b.submit(t, http.MethodPost, "/exports", "")
		testwait.Recv(t, g.started, "the handler to start")

		if r := b.do(t, http.MethodDelete, loc, ""); r.code != http.StatusNoContent {
			t.Fatalf("DELETE = %s, want 204", r)
		}
		if cause := testwait.Recv(t, g.ended, "the handler's context to be canceled"); cause == nil {
			t.Error("the handler's context ended without a cause")
		}
		wantGone(t, b, loc)
	})

	t.Run("an open event stream ends with Canceled", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("never"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))
		_, loc := b.submit(t, http.MethodPost, "/exports", "")
		testwait.Recv(t, g.started, "the handler to start")
		events := b.openEvents(t, loc)
		events.nextStatus(t)

		if r := b.do(t, http.MethodDelete, loc, ""); r.code != http.StatusNoContent {
			t.Fatalf("DELETE = %s, want 204", r)
		}
		_, doc := events.nextStatus(t)
		if doc.Status != "Canceled" || !doc.Done {
			t.Errorf("event after DELETE = %+v, want Canceled, done", doc)
		}
		events.wantEnd(t)
	})

	t.Run("finished forgets the response", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(text("done"))))
		_, loc := b.submit(t, http.MethodPost, "/exports", "")
		if r := b.finish(t, loc); r.code != http.StatusSeeOther {
			t.Fatalf("poll = %s, want 303", r)
		}

		if r := b.do(t, http.MethodDelete, loc, ""); r.code != http.StatusNoContent {
			t.Fatalf("DELETE = %s, want 204", r)
		}
		wantGone(t, b, loc)
	})
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	const retention = time.Hour
	clock := &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	cfg := asyncreply.WithClock(asyncreply.Config{Retention: retention}, clock.Now)
	b := setup(t, cfg, route("POST /exports", asyncreply.Async(text("done"))))
	_, loc := b.submit(t, http.MethodPost, "/exports", "")
	r := b.finish(t, loc)
	if r.code != http.StatusSeeOther {
		t.Fatalf("poll = %s, want 303", r)
	}
	if doc := decodeDoc(t, r); doc.ExpiresAt == nil || !doc.ExpiresAt.Equal(clock.Now().Add(retention)) {
		t.Errorf("expiresAt = %v, want completion (fake) time + retention = %v", doc.ExpiresAt, clock.Now().Add(retention))
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	clock.advance(retention - time.Second)
	if n, err := b.ar.SweepNow(ctx); n != 0 || err != nil {
		t.Errorf("SweepNow before expiry = %d, %v; want 0", n, err)
	}
	if r := b.do(t, http.MethodGet, loc+"/response", ""); r.code != http.StatusOK {
		t.Fatalf("response a second before expiry = %s, want 200", r)
	}

	clock.advance(time.Second)
	for _, target := range []string{loc, loc + "/response", loc + "/events"} {
		wantProblem(t, b.do(t, http.MethodGet, target, ""), http.StatusNotFound)
	}
	if n, err := b.ar.SweepNow(ctx); n != 1 || err != nil {
		t.Errorf("SweepNow after expiry = %d, %v; want 1", n, err)
	}
	if n, err := b.ar.SweepNow(ctx); n != 0 || err != nil {
		t.Errorf("second SweepNow = %d, %v; want 0", n, err)
	}
	wantProblem(t, b.do(t, http.MethodGet, loc, ""), http.StatusNotFound)
}

func TestUnknownOperation(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{}, route("GET /", text("app")))
	unknown := "/operations/AAAAAAAAAAAAAAAAAAAAAA"
	want := b.do(t, http.MethodGet, unknown, "")
	wantProblem(t, want, http.StatusNotFound)

	for _, target := range []string{
		unknown, unknown + "/response", unknown + "/events", unknown + "/other",
		"/operations/", "/operations/nope", "/operations/AAAAAAAAAAAAAAAAAAAAAAA", "/operations/AAAAAAAAAAAAAAAAAAAAA!",
		"/operations/..%2F..%2Fetc", "/operations/AAAAAAAAAAAAAAAAAAAAA%00",
	} {
		for _, method := range []string{http.MethodGet, http.MethodDelete} {
			if method == http.MethodDelete && strings.Count(target, "/") > 2 {
				continue // only the status resource may be deleted
			}
			r := b.do(t, method, target, "")
			wantProblem(t, r, http.StatusNotFound)
			if !bytes.Equal(r.body, want.body) {
				t.Errorf("%s %s = %s, want the same body as any unknown ID: %s", method, target, r.body, want.body)
			}
		}
	}
}

func TestWrongMethods(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(text("done"))))
	_, loc := b.submit(t, http.MethodPost, "/exports", "")

	for _, tc := range []struct {
		method, target string
		allow          []string
	}{
		{http.MethodPost, loc, []string{"GET", "HEAD", "DELETE"}},
		{http.MethodPut, loc, []string{"GET", "HEAD", "DELETE"}},
		{http.MethodPost, loc + "/response", []string{"GET", "HEAD"}},
		{http.MethodDelete, loc + "/response", []string{"GET", "HEAD"}},
		{http.MethodPost, loc + "/events", []string{"GET"}},
	} {
		r := b.do(t, tc.method, tc.target, "")
		wantProblem(t, r, http.StatusMethodNotAllowed)
		for _, m := range tc.allow {
			if !headerHas(r.header, "Allow", m) {
				t.Errorf("%s %s: Allow = %q, want it to list %s", tc.method, tc.target, r.header.Values("Allow"), m)
			}
		}
		if headerHas(r.header, "Allow", tc.method) {
			t.Errorf("%s %s: Allow = %q lists the refused method", tc.method, tc.target, r.header.Values("Allow"))
		}
	}
}

// The Operation-Location monitor answers 200 and the status document in
// every state, never a redirect: Azure's pollers read a 303 after a GET as
// a failure, and find the answer at resourceLocation instead.
func TestStatusMonitor(t *testing.T) {
	t.Parallel()
	g := newGate(text("the report"))
	defer g.release.fire()
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("GET /reports/{id}", asyncreply.Async(g)))
	alice := []string{"X-User", "alice"}

	accepted, loc := b.submit(t, http.MethodGet, "/reports/1", "", alice...)
	status := accepted.header.Get("Operation-Location")
	if status != loc+"/status" {
		t.Fatalf("Operation-Location = %q, want %q", status, loc+"/status")
	}
	testwait.Recv(t, g.started, "the replay to start")

	running := b.do(t, http.MethodGet, status, "", alice...)
	if running.code != http.StatusOK || running.header.Get("Retry-After") == "" {
		t.Fatalf("status while running = %s (Retry-After %q), want 200 with Retry-After", running, running.header.Get("Retry-After"))
	}
	if doc := decodeDoc(t, running); doc.Status != "Running" || doc.ResourceLocation != "" {
		t.Errorf("status document while running = %+v, want Running without resourceLocation", doc)
	}
	poll := b.do(t, http.MethodGet, loc, "", alice...)
	if poll.code != http.StatusAccepted || poll.header.Get("Location") != loc || poll.header.Get("Operation-Location") != status {
		t.Errorf("pending poll = %d, Location %q, Operation-Location %q; want 202 naming both monitors",
			poll.code, poll.header.Get("Location"), poll.header.Get("Operation-Location"))
	}
	if r := b.do(t, http.MethodGet, status, "", "X-User", "bob"); r.code != http.StatusNotFound {
		t.Errorf("bob's status = %s, want 404", r)
	}

	g.release.fire()
	done := b.do(t, http.MethodGet, status, "", append([]string{"Prefer", "wait=" + waitSeconds()}, alice...)...)
	if done.code != http.StatusOK || done.header.Get("Location") != "" {
		t.Fatalf("status once done = %s (Location %q), want 200 and no redirect", done, done.header.Get("Location"))
	}
	doc := decodeDoc(t, done)
	if doc.Status != "Succeeded" || doc.ResourceLocation != loc+"/response" {
		t.Fatalf("status document once done = %+v, want Succeeded with resourceLocation %s", doc, loc+"/response")
	}
	if r := b.do(t, http.MethodGet, doc.ResourceLocation, "", alice...); r.code != http.StatusOK || string(r.body) != "the report" {
		t.Errorf("resourceLocation = %s, want the report", r)
	}
	if r := b.do(t, http.MethodDelete, status, "", alice...); r.code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE of the status monitor = %s, want 405", r)
	}
}
