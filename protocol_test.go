package asyncreply_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/memory"
)

func TestSubmit(t *testing.T) {
	t.Parallel()

	t.Run("202 with monitor URL and status document", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))

		r, loc := b.submit(t, http.MethodPost, "/exports", "")

		if !monitorForm.MatchString(loc) {
			t.Errorf("Location = %q, want an absolute %s<id> URL on the server", loc, asyncreply.DefaultPrefix)
		}
		if u, _ := url.Parse(loc); u.Host != strings.TrimPrefix(b.srv.URL, "http://") {
			t.Errorf("Location host = %q, want the request's %q", u.Host, b.srv.URL)
		}
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("Retry-After = %q, want a positive number of seconds", r.header.Get("Retry-After"))
		}
		if !headerHas(r.header, "Vary", "Prefer") {
			t.Errorf("Vary = %q, want it to list Prefer", r.header.Values("Vary"))
		}
		if got := r.header.Get("Preference-Applied"); got != "" {
			t.Errorf("Preference-Applied = %q without Prefer: respond-async, want none", got)
		}

		doc := decodeDoc(t, r)
		top := objectOf(t, r.body)
		checkKeys(t, "running status document", top, "id", "status", "done", "createdAt", "updatedAt", "progress", "links")
		checkKeys(t, "links", objectOf(t, top["links"]), "self", "events")
		if _, ok := objectOf(t, top["progress"])["percent"]; !ok {
			t.Errorf("progress %s has no percent", top["progress"])
		}
		if doc.ID != opID(t, loc) {
			t.Errorf("id = %q, want the Location's %q", doc.ID, opID(t, loc))
		}
		if doc.Status != "NotStarted" && doc.Status != "Running" {
			t.Errorf("status = %q, want NotStarted or Running", doc.Status)
		}
		if doc.Done {
			t.Error("done = true for an operation whose handler is blocked")
		}
		if doc.CreatedAt.IsZero() || doc.UpdatedAt.Before(doc.CreatedAt) {
			t.Errorf("createdAt %v, updatedAt %v: want set, updatedAt not before createdAt", doc.CreatedAt, doc.UpdatedAt)
		}
		if doc.Links.Self != loc || doc.Links.Events != loc+"/events" {
			t.Errorf("links = %+v, want self %q and events %q", doc.Links, loc, loc+"/events")
		}
	})

	// DESIGN lists progress as {"percent", "message"}; only expiresAt, error
	// and links.response are conditional.
	t.Run("progress has percent and message before any report", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))

		r, loc := b.submit(t, http.MethodPost, "/exports", "")
		recv(t, g.started, "the handler to start")
		poll := b.do(t, http.MethodGet, loc, "")

		for _, body := range [][]byte{r.body, poll.body} {
			checkKeys(t, "progress", objectOf(t, objectOf(t, body)["progress"]), "percent", "message")
		}
	})

	t.Run("Preference-Applied answers Prefer respond-async", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(text("done"))))

		r, _ := b.submit(t, http.MethodPost, "/exports", "", "Prefer", "respond-async")

		if got := r.header.Get("Preference-Applied"); got != "respond-async" {
			t.Errorf("Preference-Applied = %q, want respond-async", got)
		}
	})

	t.Run("respond-async overrides Config.Wait", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{Wait: waitLimit}, route("POST /exports", asyncreply.Async(text("done"))))

		start := time.Now()
		b.submit(t, http.MethodPost, "/exports", "", "Prefer", "respond-async")

		if elapsed := time.Since(start); elapsed > waitLimit/2 {
			t.Errorf("202 took %s: Prefer: respond-async must not wait", elapsed)
		}
	})

	t.Run("Retry-After is RetryAfter rounded up to seconds", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{RetryAfter: 1500 * time.Millisecond}, route("POST /exports", asyncreply.Async(text("done"))))

		r, _ := b.submit(t, http.MethodPost, "/exports", "")

		if got := r.header.Get("Retry-After"); got != "2" {
			t.Errorf("Retry-After = %q, want 2 for 1.5s", got)
		}
	})

	t.Run("Idempotency-Key too long is 400", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		b := setup(t, asyncreply.Config{Backend: spy}, route("POST /exports", asyncreply.Async(text("done"))))

		wantProblem(t, b.do(t, http.MethodPost, "/exports", "", "Idempotency-Key", strings.Repeat("k", 256)), http.StatusBadRequest)
		if n := spy.createdCount(); n != 0 {
			t.Errorf("%d operations stored for a rejected request", n)
		}
	})

	t.Run("respond-async on a synchronous endpoint is ignored", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("GET /ping", text("pong")))

		r := b.do(t, http.MethodGet, "/ping", "", "Prefer", "respond-async")

		if r.code != http.StatusOK || string(r.body) != "pong" {
			t.Errorf("GET /ping with Prefer: respond-async = %s, want 200 pong", r)
		}
		if r.header.Get("Preference-Applied") != "" || r.header.Get("Location") != "" {
			t.Errorf("synchronous answer has Preference-Applied %q, Location %q; want neither",
				r.header.Get("Preference-Applied"), r.header.Get("Location"))
		}
	})
}

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
	recv(t, started, "the handler to start")

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
	recv(t, reported, "the handler to report progress")
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
		id := recv(t, g.started, "the handler to start")

		polled := make(chan reply, 1)
		go func() {
			r, err := b.send(b.request(t, http.MethodGet, loc, "", "Prefer", "wait="+waitSeconds()))
			if err != nil {
				r = reply{body: []byte(err.Error())}
			}
			polled <- r
		}()
		if got := recv(t, spy.watched, "the poll to start waiting"); got != id {
			t.Fatalf("watched operation %q, want %q", got, id)
		}
		g.release.fire()

		r := recv(t, polled, "the long-poll to answer")
		if r.code != http.StatusSeeOther || r.header.Get("Location") != loc+"/response" {
			t.Errorf("long-poll = %s (Location %q), want 303 to the response", r, r.header.Get("Location"))
		}
	})
}

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

		recv(t, g.ended, "the handler's context to end at the timeout")
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
		recv(t, g.started, "the handler to start")

		if r := b.do(t, http.MethodDelete, loc, ""); r.code != http.StatusNoContent {
			t.Fatalf("DELETE = %s, want 204", r)
		}
		if cause := recv(t, g.ended, "the handler's context to be canceled"); cause == nil {
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
		recv(t, g.started, "the handler to start")
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

func userFromHeader(r *http.Request) (string, error) {
	if u := r.Header.Get("X-User"); u != "" {
		return u, nil
	}
	return "", errors.New("no X-User")
}

func TestOwner(t *testing.T) {
	t.Parallel()

	t.Run("someone else's operation is an unknown one", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("for alice"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("POST /exports", asyncreply.Async(g)))
		_, loc := b.submit(t, http.MethodPost, "/exports", "", "X-User", "alice")
		recv(t, g.started, "the handler to start")

		unknown := b.do(t, http.MethodGet, "/operations/AAAAAAAAAAAAAAAAAAAAAA", "", "X-User", "bob")
		wantProblem(t, unknown, http.StatusNotFound)
		for _, tc := range []struct{ method, target string }{
			{http.MethodGet, loc}, {http.MethodHead, loc}, {http.MethodGet, loc + "/response"},
			{http.MethodGet, loc + "/events"}, {http.MethodDelete, loc}, {http.MethodGet, loc},
		} {
			r := b.do(t, tc.method, tc.target, "", "X-User", "bob")
			if r.code != http.StatusNotFound || r.header.Get("Content-Type") != unknown.header.Get("Content-Type") {
				t.Errorf("bob's %s %s = %s, want 404 like an unknown ID", tc.method, tc.target, r)
			}
			if tc.method != http.MethodHead && !bytes.Equal(r.body, unknown.body) {
				t.Errorf("bob's %s %s body = %s, want an unknown ID's %s", tc.method, tc.target, r.body, unknown.body)
			}
		}

		if r := b.do(t, http.MethodGet, loc, "", "X-User", "alice"); r.code != http.StatusAccepted {
			t.Fatalf("alice's poll after bob's DELETE = %s, want 202: bob must not cancel it", r)
		}
		g.release.fire()
		if r := b.finish(t, loc, "X-User", "alice"); r.code != http.StatusSeeOther {
			t.Fatalf("alice's poll = %s, want 303", r)
		}
		if r := b.do(t, http.MethodGet, loc+"/response", "", "X-User", "bob"); r.code != http.StatusNotFound {
			t.Errorf("bob's GET response = %s, want 404", r)
		}
		if r := b.do(t, http.MethodGet, loc+"/response", "", "X-User", "alice"); r.code != http.StatusOK || string(r.body) != "for alice" {
			t.Errorf("alice's GET response = %s, want 200 for alice", r)
		}
	})

	t.Run("no principal is 403 at submit and 404 at poll", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		b := setup(t, asyncreply.Config{Backend: spy, Owner: userFromHeader}, route("POST /exports", asyncreply.Async(text("done"))))

		wantProblem(t, b.do(t, http.MethodPost, "/exports", ""), http.StatusForbidden)
		if n := spy.createdCount(); n != 0 {
			t.Errorf("%d operations stored without a principal", n)
		}
		_, loc := b.submit(t, http.MethodPost, "/exports", "", "X-User", "alice")
		wantProblem(t, b.do(t, http.MethodGet, loc, ""), http.StatusNotFound)
	})
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()

	t.Run("a retry returns the same operation", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		var runs atomic.Int32
		g := newGate(func(w http.ResponseWriter, r *http.Request) {
			runs.Add(1)
			io.Copy(w, r.Body)
		})
		defer g.release.fire()
		b := setup(t, asyncreply.Config{Backend: spy, Owner: userFromHeader}, route("POST /payments", asyncreply.Async(g)))
		key := []string{"Idempotency-Key", "3f1c8a2e-pay-1", "X-User", "alice"}

		_, first := b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, key...)
		recv(t, g.started, "the handler to start")
		_, retry := b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, key...)
		if retry != first {
			t.Errorf("retry Location = %q, want the first's %q", retry, first)
		}
		g.release.fire()
		if r := b.finish(t, first, "X-User", "alice"); r.code != http.StatusSeeOther {
			t.Fatalf("poll = %s, want 303", r)
		}
		_, late := b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, key...)
		if late != first {
			t.Errorf("retry after completion Location = %q, want the first's %q", late, first)
		}
		if r := b.do(t, http.MethodGet, late+"/response", "", "X-User", "alice"); string(r.body) != `{"amount":10}` {
			t.Errorf("response = %s, want the echoed body", r)
		}
		if n := spy.createdCount(); n != 1 {
			t.Errorf("%d operations created, want 1", n)
		}
		if n := runs.Load(); n != 1 {
			t.Errorf("handler ran %d times, want once", n)
		}
	})

	t.Run("the same key for another request is 422", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		b := setup(t, asyncreply.Config{Backend: spy}, route("POST /payments", asyncreply.Async(text("paid"))))

		b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, "Idempotency-Key", "k-1")
		wantProblem(t, b.do(t, http.MethodPost, "/payments", `{"amount":99}`, "Idempotency-Key", "k-1"), http.StatusUnprocessableEntity)
		if n := spy.createdCount(); n != 1 {
			t.Errorf("%d operations created, want 1", n)
		}
	})

	t.Run("without an owner, the same key from other credentials is another operation", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		b := setup(t, asyncreply.Config{Backend: spy}, route("POST /login", asyncreply.Async(http.HandlerFunc(
			func(w http.ResponseWriter, r *http.Request) {
				// The answer carries the caller's own session: handing it to
				// anyone else who guesses the key would be a takeover.
				http.SetCookie(w, &http.Cookie{Name: "session", Value: "of-" + r.Header.Get("Authorization")})
				io.WriteString(w, "welcome")
			}))))

		alice := []string{"Idempotency-Key", "k-1", "Authorization", "Bearer alice", "Cookie", "theme=dark"}
		_, first := b.submit(t, http.MethodPost, "/login", `{}`, alice...)
		_, mallory := b.submit(t, http.MethodPost, "/login", `{}`, "Idempotency-Key", "k-1", "Authorization", "Bearer mallory")
		if mallory == first {
			t.Fatalf("a client with other credentials was handed operation %q of the first", first)
		}
		if r := b.finish(t, mallory); r.code != http.StatusSeeOther {
			t.Fatalf("mallory's poll = %s, want 303", r)
		}
		if r := b.do(t, http.MethodGet, mallory+"/response", ""); strings.Contains(r.header.Get("Set-Cookie"), "alice") {
			t.Errorf("mallory's response sets %q", r.header.Get("Set-Cookie"))
		}
		_, retry := b.submit(t, http.MethodPost, "/login", `{}`, alice...)
		if retry != first {
			t.Errorf("the first client's retry got %q, want its operation %q", retry, first)
		}
		if n := spy.createdCount(); n != 2 {
			t.Errorf("%d operations created, want 2", n)
		}
	})

	t.Run("the same key from another owner is another operation", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("POST /payments", asyncreply.Async(text("paid"))))

		_, alice := b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, "Idempotency-Key", "k-1", "X-User", "alice")
		_, bob := b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, "Idempotency-Key", "k-1", "X-User", "bob")
		if alice == bob {
			t.Errorf("alice and bob share operation %q", alice)
		}
		if r := b.finish(t, bob, "X-User", "bob"); r.code != http.StatusSeeOther {
			t.Errorf("bob's poll = %s, want 303", r)
		}
	})
}

func TestInline(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	var replayID atomic.Value
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := asyncreply.OperationID(r.Context())
		replayID.Store(id)
		runs.Add(1)
		w.Header().Set("X-Mode", "inline")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "made inline")
	})
	b := setup(t, asyncreply.Config{Inline: true}, route("POST /things", asyncreply.Async(handler)))

	// Already finished when answered: a redirect to the response, as its
	// first poll would answer, rather than a 202 that makes a polite client
	// wait Retry-After for nothing.
	r := b.do(t, http.MethodPost, "/things", "")
	if runs.Load() != 1 {
		t.Fatalf("handler ran %d times before the answer, want 1", runs.Load())
	}
	if r.code != http.StatusSeeOther {
		t.Fatalf("POST /things = %s, want 303", r)
	}
	doc := decodeDoc(t, r)
	loc := doc.Links.Self
	if !monitorForm.MatchString(loc) || replayID.Load() != doc.ID || opID(t, loc) != doc.ID {
		t.Errorf("links.self %q, handler's OperationID %q, document id %q: want the asynchronous mode's monitor URL of one operation", loc, replayID.Load(), doc.ID)
	}
	if got := r.header.Get("Location"); got != loc+"/response" {
		t.Errorf("303 Location = %q, want %q", got, loc+"/response")
	}
	if got := r.header.Get("Operation-Location"); got != loc+"/status" {
		t.Errorf("Operation-Location = %q, want %q", got, loc+"/status")
	}
	resp := b.do(t, http.MethodGet, r.header.Get("Location"), "")
	if resp.code != http.StatusCreated || string(resp.body) != "made inline" || resp.header.Get("X-Mode") != "inline" {
		t.Errorf("response = %s, want the handler's 201", resp)
	}

	// Prefer: respond-async still gets the 202 of the asynchronous mode.
	r, loc = b.submit(t, http.MethodPost, "/things", "", "Prefer", "respond-async")
	if runs.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2", runs.Load())
	}
	if !monitorForm.MatchString(loc) || r.header.Get("Retry-After") == "" || !headerHas(r.header, "Vary", "Prefer") {
		t.Errorf("202 Location %q, headers %v: want the asynchronous mode's", loc, r.header)
	}
	if first := b.do(t, http.MethodGet, loc, ""); first.code != http.StatusSeeOther || first.header.Get("Location") != loc+"/response" {
		t.Errorf("first poll = %s, want 303 to the response", first)
	}

	// A failure is answered as its poll would be: the status a synchronous
	// caller would have seen.
	failing := setup(t, asyncreply.Config{Inline: true}, route("GET /boom", asyncreply.Async(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	}))))
	if r := failing.do(t, http.MethodGet, "/boom", ""); r.code != http.StatusInternalServerError || r.header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("GET /boom = %s, want the 500 problem", r)
	}
}

var metaRefresh = regexp.MustCompile(`<meta http-equiv="refresh" content="([^"]*)">`)

// refreshTarget is the URL the waiting page reloads, resolved against base.
func refreshTarget(t *testing.T, page []byte, base string) string {
	t.Helper()
	m := metaRefresh.FindSubmatch(page)
	if m == nil {
		t.Fatalf("waiting page has no meta refresh:\n%s", page)
	}
	_, target, ok := strings.Cut(html.UnescapeString(string(m[1])), "url=")
	if !ok {
		t.Fatalf("meta refresh %q has no url", m[1])
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := u.Parse(strings.TrimSpace(target))
	if err != nil {
		t.Fatalf("meta refresh url %q: %v", target, err)
	}
	return ref.String()
}

func TestWaitingPage(t *testing.T) {
	t.Parallel()
	const browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	const message = `<script>alert("pwned")</script> & co`

	t.Run("shows progress, escaped, and refreshes itself", func(t *testing.T) {
		t.Parallel()
		report, reported := newSignal(), make(chan struct{}, 1)
		defer report.fire()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(
			func(w http.ResponseWriter, r *http.Request) {
				if report.wait(r.Context()) {
					asyncreply.ReportProgress(r.Context(), 30, message)
					reported <- struct{}{}
				}
				g.ServeHTTP(w, r)
			}))))

		r, loc := b.submit(t, http.MethodGet, "/reports/1", "", "Accept", browser)
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Fatalf("202 Content-Type = %q, want text/html", ct)
		}
		if got := refreshTarget(t, r.body, loc); got != loc {
			t.Errorf("waiting page refreshes to %q, want the monitor URL %q", got, loc)
		}

		report.fire()
		recv(t, reported, "the handler to report progress")
		poll := b.do(t, http.MethodGet, loc, "", "Accept", browser)
		if poll.code != http.StatusAccepted || !strings.HasPrefix(poll.header.Get("Content-Type"), "text/html") {
			t.Fatalf("browser poll = %s, want a 202 waiting page", poll)
		}
		if poll.header.Get("Retry-After") == "" {
			t.Error("browser poll without Retry-After")
		}
		page := string(poll.body)
		if !regexp.MustCompile(`<progress[^>]*value="30"`).MatchString(page) {
			t.Errorf("waiting page has no <progress value=\"30\">:\n%s", page)
		}
		if strings.Contains(page, "<script>") {
			t.Errorf("waiting page contains the progress message's markup unescaped:\n%s", page)
		}
		if !strings.Contains(page, "&lt;script&gt;") || !strings.Contains(page, "&amp; co") {
			t.Errorf("waiting page does not show the progress message escaped:\n%s", page)
		}
		if got := refreshTarget(t, poll.body, loc); got != loc {
			t.Errorf("waiting page refreshes to %q, want the monitor URL %q", got, loc)
		}
	})

	t.Run("API clients get JSON", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
		for _, accept := range []string{"", "*/*", "application/json", "application/json, text/html;q=0.5"} {
			r, _ := b.submit(t, http.MethodGet, "/reports/1", "", "Accept", accept)
			decodeDoc(t, r)
		}
	})

	t.Run("refresh URL honours PublicURL's path", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{PublicURL: "https://public.example/app"}, route("GET /reports/{id}", asyncreply.Async(g)))

		r, loc := b.submit(t, http.MethodGet, "/reports/1", "", "Accept", browser)
		if !strings.HasPrefix(loc, "https://public.example/app/operations/") {
			t.Fatalf("Location = %q, want it under PublicURL", loc)
		}
		if got := refreshTarget(t, r.body, loc); got != loc {
			t.Errorf("waiting page refreshes to %q, want the monitor URL %q", got, loc)
		}
	})
}

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
		recv(t, g.started, "the handler to start")

		events := b.openEvents(t, loc)
		if ct := events.resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Errorf("Content-Type = %q, want text/event-stream", ct)
		}
		_, doc := events.nextStatus(t)
		if doc.ID != opID(t, loc) || doc.Status != "Running" || doc.Done {
			t.Errorf("first event = %+v, want the running operation's document", doc)
		}

		report.fire()
		recv(t, reported, "the handler to report progress")
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
			recv(t, reported, "the handler to report progress")
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
		recv(t, reported, "the handler to report progress")

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
		recv(t, reported, "the first report")
		events := b.openEvents(t, loc)
		if _, doc := events.nextStatus(t); doc.Progress.Message != "loading" {
			t.Fatalf("first event progress = %+v, want loading", doc.Progress)
		}

		send(t, steps, "rendering", "a progress step")
		recv(t, reported, "the second report")
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
		recv(t, g.started, "the handler to start")

		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		returned := make(chan error, 1)
		go func() { returned <- b.shutdown(ctx) }()

		recv(t, g.ended, "the handler's context to be canceled")
		if err := recv(t, returned, "Shutdown to return"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want its context's error", err)
		}
	})

	t.Run("lets running operations finish and ends event streams", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("finished during shutdown"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))
		_, loc := b.submit(t, http.MethodPost, "/exports", "")
		recv(t, g.started, "the handler to start")
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

		if err := recv(t, returned, "Shutdown to return"); err != nil {
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
	recv(t, g.started, "the handler to start")
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

func TestCredentialsNeverShown(t *testing.T) {
	t.Parallel()
	const bearer, session, queryToken = "secret-bearer-token", "secret-session-cookie", "secret-query-token"
	secrets := []string{bearer, session, queryToken}
	logs := &lockedBuffer{}
	report, reported := newSignal(), make(chan struct{}, 1)
	defer report.fire()
	g := newGate(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+bearer {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "private report")
	})
	defer g.release.fire()
	app := http.NewServeMux()
	app.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if report.wait(r.Context()) {
			asyncreply.ReportProgress(r.Context(), 10, "reading")
			reported <- struct{}{}
		}
		g.ServeHTTP(w, r)
	})))
	app.Handle("GET /crash", asyncreply.Async(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("crash") })))
	b := setup(t, asyncreply.Config{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Owner:  func(r *http.Request) (string, error) { return r.Header.Get("Authorization"), nil },
	}, app)
	creds := []string{"Authorization", "Bearer " + bearer, "Cookie", "session=" + session}

	var seen [][]byte
	r, loc := b.submit(t, http.MethodGet, "/reports/1?access_token="+queryToken, "", creds...)
	seen = append(seen, r.body)
	events := b.openEvents(t, loc, creds...)
	_, _ = events.nextStatus(t)
	report.fire()
	recv(t, reported, "the handler to report progress")
	seen = append(seen, b.do(t, http.MethodGet, loc, "", creds...).body)
	seen = append(seen, b.do(t, http.MethodGet, loc, "", append(creds, "Accept", "text/html")...).body)
	g.release.fire()
	done := b.finish(t, loc, creds...)
	if done.code != http.StatusSeeOther {
		t.Fatalf("poll = %s, want 303", done)
	}
	seen = append(seen, done.body)
	for {
		ev, err := events.next()
		if err != nil {
			break
		}
		seen = append(seen, []byte(ev.data))
	}
	if r := b.do(t, http.MethodGet, loc+"/response", "", creds...); string(r.body) != "private report" {
		t.Fatalf("response = %s, want the authorized answer", r)
	}
	_, crash := b.submit(t, http.MethodGet, "/crash", "", creds...)
	seen = append(seen, b.finish(t, crash, creds...).body)

	for _, body := range seen {
		for _, secret := range secrets {
			if bytes.Contains(body, []byte(secret)) {
				t.Errorf("a client-visible document contains %q: %s", secret, body)
			}
		}
	}
	logged := logs.String()
	if !strings.Contains(logged, opID(t, loc)) {
		t.Fatalf("nothing was logged about the operation; the check below would prove nothing:\n%s", logged)
	}
	for _, secret := range secrets {
		if strings.Contains(logged, secret) {
			t.Errorf("the log contains %q:\n%s", secret, logged)
		}
	}
}

func TestKeyEncryptsAtRest(t *testing.T) {
	t.Parallel()
	const secret = "secret-bearer-token"
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprintf("key=%t", keyed), func(t *testing.T) {
			t.Parallel()
			spy := newSpy()
			cfg := asyncreply.Config{Backend: spy}
			if keyed {
				cfg.Key = bytes.Repeat([]byte{7}, 32)
			}
			b := setup(t, cfg, route("POST /reports", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "answer for "+r.Header.Get("Authorization"))
			}))))
			_, loc := b.submit(t, http.MethodPost, "/reports", "confidential body", "Authorization", secret)
			b.finish(t, loc)
			if r := b.do(t, http.MethodGet, loc+"/response", ""); string(r.body) != "answer for "+secret {
				t.Fatalf("response = %s, want the handler's answer", r)
			}

			requests, responses := spy.stored()
			if len(requests) != 1 || len(responses) != 1 {
				t.Fatalf("stored %d requests, %d responses; want 1 each", len(requests), len(responses))
			}
			for _, stored := range [][]byte{requests[0], responses[0]} {
				if clear := bytes.Contains(stored, []byte(secret)); clear == keyed {
					t.Errorf("with key %t, the backend holds the secret in clear: %t", keyed, clear)
				}
			}
			// The recorded credentials are kept no longer than needed.
			op, err := spy.Get(context.Background(), opID(t, loc))
			if err != nil || len(op.Request) != 0 {
				t.Errorf("finished operation still holds its recorded request (%d bytes, %v)", len(op.Request), err)
			}
		})
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

func TestMonitorLocation(t *testing.T) {
	t.Parallel()
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	forwarded := []string{"X-Forwarded-Proto", "https", "X-Forwarded-Host", "public.example"}
	for _, tc := range []struct {
		name   string
		cfg    asyncreply.Config
		header []string
		want   func(srvURL string) string // the monitor URL without the ID
	}{
		{"from the request", asyncreply.Config{}, nil,
			func(u string) string { return u + "/operations/" }},
		{"PublicURL", asyncreply.Config{PublicURL: "https://api.example.com/"}, forwarded,
			func(string) string { return "https://api.example.com/operations/" }},
		{"forwarded by a trusted proxy", asyncreply.Config{TrustedProxies: loopback}, forwarded,
			func(string) string { return "https://public.example/operations/" }},
		{"forwarded by an untrusted client", asyncreply.Config{}, forwarded,
			func(u string) string { return u + "/operations/" }},
		{"forwarded from outside the trusted networks",
			asyncreply.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, forwarded,
			func(u string) string { return u + "/operations/" }},
		{"forwarded host that would break out of the URL", asyncreply.Config{TrustedProxies: loopback},
			[]string{"X-Forwarded-Host", "evil.example/x?"},
			func(u string) string { return u + "/operations/" }},
		{"custom prefix", asyncreply.Config{Prefix: "/jobs/"}, nil,
			func(u string) string { return u + "/jobs/" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.cfg, route("POST /exports", asyncreply.Async(text("done"))))

			r, loc := b.submit(t, http.MethodPost, "/exports", "", tc.header...)

			base := tc.want(b.srv.URL)
			id, ok := strings.CutPrefix(loc, base)
			if !ok || len(id) != 22 {
				t.Fatalf("Location = %q, want %s<id>", loc, base)
			}
			if doc := decodeDoc(t, r); doc.Links.Self != loc || doc.Links.Events != loc+"/events" {
				t.Errorf("links = %+v, want them under %q", doc.Links, loc)
			}
			// Whatever the public origin, the monitor is served at the prefix.
			u, _ := url.Parse(loc)
			if r := b.finish(t, u.Path, tc.header...); r.code != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), base+id) {
				t.Errorf("poll = %s (Location %q), want 303 under %q", r, r.header.Get("Location"), base)
			}
		})
	}
}

func TestTLSIsKeptOnReplay(t *testing.T) {
	t.Parallel()
	b := newBundle(t, asyncreply.Config{}, route("GET /whoami", asyncreply.Async(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "tls=%t", r.TLS != nil)
		}))), httptest.NewTLSServer)

	_, loc := b.submit(t, http.MethodGet, "/whoami", "")
	if !strings.HasPrefix(loc, "https://") {
		t.Errorf("Location = %q, want https for a TLS request", loc)
	}
	b.finish(t, loc)
	if r := b.do(t, http.MethodGet, loc+"/response", ""); string(r.body) != "tls=true" {
		t.Errorf("replayed handler saw %s, want tls=true", r.body)
	}
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
		recv(t, g.ended, "the handler's context to end at the route's timeout")
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
