package asyncreply_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/backend/sqlite"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// login answers as an application's login does: a session cookie and a page.
var login = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: "session", Value: "alice", Path: "/", HttpOnly: true})
	w.Header().Set("X-Logged-In", "alice")
	io.WriteString(w, "welcome")
})

const loginCookie = "session=alice; Path=/; HttpOnly"

// storeOnly is a backend that another Middleware runs: a second Middleware
// on it reads and writes operations but neither starts nor stops it, as a
// second process on a shared store would not.
type storeOnly struct{ backend.Backend }

func (storeOnly) Start(context.Context, backend.ExecuteFunc) error { return nil }
func (storeOnly) Stop(context.Context) error                       { return nil }

// collectSpy is the memory backend, counting the writes that reads of a
// response cause, whose MarkCollected fails while down is set.
type collectSpy struct {
	*memory.Backend
	marks atomic.Int64
	down  atomic.Bool
}

func newCollectSpy() *collectSpy { return &collectSpy{Backend: memory.New(memory.Config{})} }

func (c *collectSpy) MarkCollected(ctx context.Context, id string, at time.Time) (bool, error) {
	c.marks.Add(1)
	if c.down.Load() {
		return false, fmt.Errorf("flaky store: connection refused: %w", backend.ErrUnavailable)
	}
	return c.Backend.MarkCollected(ctx, id, at)
}

// finishedResponse submits a request, waits for its operation to succeed,
// and returns the monitor URL.
func (b *bundle) finishedResponse(t *testing.T, method, target string, header ...string) string {
	t.Helper()
	_, loc := b.submit(t, method, target, "", header...)
	if r := b.finish(t, loc, header...); r.code != http.StatusSeeOther {
		t.Fatalf("finished poll = %s, want 303", r)
	}
	return loc
}

func TestStoredSetCookieIsDeliveredOnce(t *testing.T) {
	t.Parallel()

	t.Run("a later read carries none", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("POST /login", asyncreply.Async(login)))
		loc := b.finishedResponse(t, http.MethodPost, "/login")

		first := b.do(t, http.MethodGet, loc+"/response", "")
		if got := first.header.Values("Set-Cookie"); !slices.Equal(got, []string{loginCookie}) {
			t.Fatalf("first read's Set-Cookie = %q, want the handler's %q", got, loginCookie)
		}
		// The user logs out (the application clears the cookie), then opens
		// the operation's URL again: that must not log them back in.
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			again := b.do(t, method, loc+"/response", "")
			if got := again.header.Values("Set-Cookie"); len(got) != 0 {
				t.Errorf("%s of the response after the first read has Set-Cookie %q, want none", method, got)
			}
			if again.code != http.StatusOK || again.header.Get("X-Logged-In") != "alice" {
				t.Errorf("%s of the response after the first read = %s, want the stored 200 and its other headers", method, again)
			}
			if method == http.MethodGet && string(again.body) != "welcome" {
				t.Errorf("GET of the response after the first read has body %q, want the stored one", again.body)
			}
		}
	})

	t.Run("of concurrent first reads exactly one gets them", func(t *testing.T) {
		t.Parallel()
		const readers = 8
		b := setup(t, asyncreply.Config{}, route("POST /login", asyncreply.Async(login)))
		loc := b.finishedResponse(t, http.MethodPost, "/login")

		begin := make(chan struct{})
		results := make([]reply, readers)
		errs := make([]error, readers)
		var wg sync.WaitGroup
		for i := range readers {
			req := b.request(t, http.MethodGet, loc+"/response", "")
			wg.Go(func() {
				<-begin
				results[i], errs[i] = b.send(req)
			})
		}
		close(begin)
		wg.Wait()
		withCookies := 0
		for i, r := range results {
			if errs[i] != nil {
				t.Fatalf("read %d: %v", i, errs[i])
			}
			if r.code != http.StatusOK || string(r.body) != "welcome" {
				t.Errorf("read %d = %s, want the stored 200", i, r)
			}
			if len(r.header.Values("Set-Cookie")) > 0 {
				withCookies++
			}
		}
		if withCookies != 1 {
			t.Errorf("%d of %d concurrent reads carried the stored Set-Cookie, want exactly 1", withCookies, readers)
		}
	})

	t.Run("the answer within Prefer: wait was the first read", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("POST /login", asyncreply.Async(login)))

		direct := b.do(t, http.MethodPost, "/login", "", "Prefer", "wait="+waitSeconds(), "Idempotency-Key", "login-1")
		if direct.code != http.StatusOK || !slices.Equal(direct.header.Values("Set-Cookie"), []string{loginCookie}) {
			t.Fatalf("answer within the wait = %s with Set-Cookie %q, want the handler's 200 and cookie", direct, direct.header.Values("Set-Cookie"))
		}
		// The same key finds the operation, to read its response again.
		_, loc := b.submit(t, http.MethodPost, "/login", "", "Prefer", "respond-async", "Idempotency-Key", "login-1")
		if got := b.do(t, http.MethodGet, loc+"/response", "").header.Values("Set-Cookie"); len(got) != 0 {
			t.Errorf("response read after the answer within the wait has Set-Cookie %q, want none", got)
		}
	})

	t.Run("the mark is the backend's, shared by every Middleware on it", func(t *testing.T) {
		t.Parallel()
		shared := memory.New(memory.Config{})
		first := setup(t, asyncreply.Config{Backend: shared}, route("POST /login", asyncreply.Async(login)))
		other := setup(t, asyncreply.Config{Backend: storeOnly{shared}}, http.NotFoundHandler())
		loc := first.finishedResponse(t, http.MethodPost, "/login")
		path := strings.TrimPrefix(loc, first.srv.URL)

		if got := other.do(t, http.MethodGet, path+"/response", "").header.Values("Set-Cookie"); !slices.Equal(got, []string{loginCookie}) {
			t.Fatalf("first read, through the other Middleware: Set-Cookie = %q, want %q", got, loginCookie)
		}
		if got := first.do(t, http.MethodGet, loc+"/response", "").header.Values("Set-Cookie"); len(got) != 0 {
			t.Errorf("second read, through the first Middleware: Set-Cookie = %q, want none", got)
		}
	})

	t.Run("a store outage never delivers them twice", func(t *testing.T) {
		t.Parallel()
		spy := newCollectSpy()
		b := setup(t, asyncreply.Config{Backend: spy}, route("POST /login", asyncreply.Async(login)))
		spy.down.Store(true)

		// The submitter is told to collect the answer later rather than
		// 503, which would have it submit again.
		r := b.do(t, http.MethodPost, "/login", "", "Prefer", "wait="+waitSeconds())
		loc := r.header.Get("Location")
		if r.code != http.StatusAccepted || loc == "" || len(r.header.Values("Set-Cookie")) != 0 {
			t.Fatalf("answer within the wait while the store cannot mark it collected = %s with Set-Cookie %q, want 202 with Location and no cookies",
				r, r.header.Values("Set-Cookie"))
		}
		unavailable := b.do(t, http.MethodGet, loc+"/response", "")
		wantProblem(t, unavailable, http.StatusServiceUnavailable)
		if unavailable.header.Get("Retry-After") == "" {
			t.Error("503 while the store cannot mark the response collected has no Retry-After")
		}

		spy.down.Store(false)
		if got := b.do(t, http.MethodGet, loc+"/response", "").header.Values("Set-Cookie"); !slices.Equal(got, []string{loginCookie}) {
			t.Errorf("first read once the store is back: Set-Cookie = %q, want %q", got, loginCookie)
		}
	})

	t.Run("only a response with Set-Cookie costs a write, and only once", func(t *testing.T) {
		t.Parallel()
		counter := newCollectSpy()
		mux := http.NewServeMux()
		mux.Handle("POST /login", asyncreply.Async(login))
		mux.Handle("GET /plain", asyncreply.Async(text("plain")))
		b := setup(t, asyncreply.Config{Backend: counter}, mux)

		plain := b.finishedResponse(t, http.MethodGet, "/plain")
		for range 3 {
			b.do(t, http.MethodGet, plain+"/response", "")
		}
		if n := counter.marks.Load(); n != 0 {
			t.Errorf("reading a response without Set-Cookie called MarkCollected %d times, want 0", n)
		}
		withCookie := b.finishedResponse(t, http.MethodPost, "/login")
		for range 3 {
			b.do(t, http.MethodGet, withCookie+"/response", "")
		}
		if n := counter.marks.Load(); n != 1 {
			t.Errorf("reading a response with Set-Cookie 3 times called MarkCollected %d times, want 1 (later reads see it collected)", n)
		}
	})
}

// cacheControlPage is an asynchronous page that answers with the
// Cache-Control given in its query, if any.
func cacheControlPage() http.Handler {
	return route("GET /page", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cc := r.URL.Query().Get("cc"); cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		io.WriteString(w, "page")
	})))
}

func TestResponseCaching(t *testing.T) {
	t.Parallel()
	page := func(cacheControl string) string { return "/page?cc=" + url.QueryEscape(cacheControl) }

	t.Run("private, no-cache unless the application says otherwise", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, cacheControlPage())
		for _, tc := range []struct{ sent, want string }{
			{"", "private, no-cache"},
			{"public, max-age=60", "public, max-age=60"}, // anyone with the URL may see it anyway
			{"no-store", "no-store"},
		} {
			loc := b.finishedResponse(t, http.MethodGet, page(tc.sent))
			r := b.do(t, http.MethodGet, loc+"/response", "")
			if got := r.header.Values("Cache-Control"); !slices.Equal(got, []string{tc.want}) {
				t.Errorf("application's Cache-Control %q: response's = %q, want %q", tc.sent, got, tc.want)
			}
			if r.header.Get("Expires") == "" {
				t.Errorf("application's Cache-Control %q: response has no Expires", tc.sent)
			}
		}
	})

	t.Run("an owner-bound answer is never public", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{Owner: userFromHeader}, cacheControlPage())
		for _, tc := range []struct{ sent, want string }{
			{"", "private, no-cache"},
			{"public, max-age=60", "private, max-age=60"},
			{"max-age=60, must-revalidate", "private, max-age=60, must-revalidate"},
			{"private, max-age=60", "private, max-age=60"},
			{`max-age=60, PUBLIC, no-cache="Set-Cookie, X-Token"`, `max-age=60, private, no-cache="Set-Cookie, X-Token"`},
			{`private="X-Token", s-maxage=600, public`, "private, s-maxage=600"},
		} {
			loc := b.finishedResponse(t, http.MethodGet, page(tc.sent), "X-User", "alice")
			r := b.do(t, http.MethodGet, loc+"/response", "", "X-User", "alice")
			if r.code != http.StatusOK {
				t.Fatalf("response = %s, want 200", r)
			}
			if got := r.header.Values("Cache-Control"); !slices.Equal(got, []string{tc.want}) {
				t.Errorf("application's Cache-Control %q: owner-bound response's = %q, want %q", tc.sent, got, tc.want)
			}
		}
	})

	t.Run("the answer within Prefer: wait is the application's own", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{Owner: userFromHeader}, cacheControlPage())
		for _, sent := range []string{"", "public, max-age=60"} {
			r := b.do(t, http.MethodGet, page(sent), "", "X-User", "alice", "Prefer", "wait="+waitSeconds())
			if r.code != http.StatusOK || string(r.body) != "page" {
				t.Fatalf("answer within the wait = %s, want the page directly", r)
			}
			if got := r.header.Get("Expires"); got != "" {
				t.Errorf("application's Cache-Control %q: answer within the wait has Expires %q, which the application never sent", sent, got)
			}
			if got := r.header.Get("Cache-Control"); got != sent {
				t.Errorf("answer within the wait has Cache-Control %q, want the application's %q", got, sent)
			}
		}
	})

	t.Run("failures are no-store", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("POST /boom", asyncreply.Async(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic("boom")
		}))))
		_, loc := b.submit(t, http.MethodPost, "/boom", "")
		for _, r := range []reply{
			b.finish(t, loc),
			b.do(t, http.MethodGet, loc, "", "Accept", "text/html"),
			b.do(t, http.MethodGet, loc+"/response", ""),
		} {
			if r.code != http.StatusInternalServerError || r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("failure = %s with Cache-Control %q, want 500, no-store", r, r.header.Get("Cache-Control"))
			}
		}
	})
}

// A HEAD operation's answer has headers and no body; its /response must
// not promise one.
func TestHeadOperation(t *testing.T) {
	t.Parallel()
	const getBody = "hello world"
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		// syncLength is the Content-Length the answer within Prefer: wait
		// has: the handler's own.
		syncLength string
	}{
		{
			name: "a handler that writes its GET body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Document", "7")
				io.WriteString(w, getBody)
			},
		},
		{
			// What the gateway stores: an upstream's HEAD answer.
			name: "a handler that sets Content-Length and writes nothing",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Document", "7")
				w.Header().Set("Content-Length", "11")
				if r.Method != http.MethodHead {
					io.WriteString(w, getBody)
				}
			},
			syncLength: "11",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, asyncreply.Config{}, route("/documents/{id}", asyncreply.Async(tc.handler)))
			loc := b.finishedResponse(t, http.MethodHead, "/documents/7")

			for _, method := range []string{http.MethodGet, http.MethodHead} {
				r, err := b.send(b.request(t, method, loc+"/response", ""))
				if err != nil {
					t.Fatalf("%s of a HEAD operation's response: %v (its headers promise a body it does not have)", method, err)
				}
				if r.code != http.StatusOK || r.header.Get("X-Document") != "7" {
					t.Errorf("%s of a HEAD operation's response = %s, want the stored 200 and headers", method, r)
				}
				if len(r.body) != 0 {
					t.Errorf("%s of a HEAD operation's response has body %q, want none: a HEAD answer has none", method, r.body)
				}
				if cl := r.header.Get("Content-Length"); cl != "" && cl != "0" {
					t.Errorf("%s of a HEAD operation's response has Content-Length %s, want none or 0: no body follows", method, cl)
				}
			}

			direct, err := b.send(b.request(t, http.MethodHead, "/documents/7", "", "Prefer", "wait="+waitSeconds()))
			if err != nil {
				t.Fatalf("HEAD within the wait: %v", err)
			}
			if direct.code != http.StatusOK || direct.header.Get("X-Document") != "7" || len(direct.body) != 0 {
				t.Errorf("HEAD within the wait = %s, want the handler's 200 and headers, no body", direct)
			}
			if tc.syncLength != "" && direct.header.Get("Content-Length") != tc.syncLength {
				t.Errorf("HEAD within the wait has Content-Length %q, want the handler's %s", direct.header.Get("Content-Length"), tc.syncLength)
			}

			// A GET operation of the same handler is unchanged.
			get := b.finishedResponse(t, http.MethodGet, "/documents/7")
			if r := b.do(t, http.MethodGet, get+"/response", ""); r.code != http.StatusOK || string(r.body) != getBody {
				t.Errorf("GET operation's response = %s, want the body %q", r, getBody)
			}
		})
	}
}

// A response stored by a process with one key and read by a process with
// another (a key changed across a restart) is announced as what it is, the
// same on the poll as on the response, never as a 303 to a failure.
func TestStoredResponseSealedWithAnotherKey(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{1}, 32)
	otherKey := bytes.Repeat([]byte{2}, 32)

	check := func(t *testing.T, writer, reader *bundle, label string) {
		t.Helper()
		loc := writer.finishedResponse(t, http.MethodPost, "/login")
		path := strings.TrimPrefix(loc, writer.srv.URL)

		poll := reader.do(t, http.MethodGet, path, "")
		p := wantProblem(t, poll, http.StatusInternalServerError)
		if !strings.Contains(strings.ToLower(p.Title), "key") {
			t.Errorf("%s: poll's problem title %q does not say the key is the matter", label, p.Title)
		}
		for _, resource := range []string{"/response", "/status"} {
			r := reader.do(t, http.MethodGet, path+resource, "")
			if q := wantProblem(t, r, http.StatusInternalServerError); q != p {
				t.Errorf("%s: %s's problem %+v, want the poll's %+v", label, resource, q, p)
			}
		}
		if r := writer.do(t, http.MethodGet, loc+"/response", ""); r.code != http.StatusOK || string(r.body) != "welcome" {
			t.Errorf("%s: the writer's own read = %s, want the stored 200", label, r)
		}
	}

	t.Run("memory, Middlewares sharing one backend", func(t *testing.T) {
		t.Parallel()
		shared := memory.New(memory.Config{})
		writer := setup(t, asyncreply.Config{Backend: shared, Key: key}, route("POST /login", asyncreply.Async(login)))
		check(t, writer, setup(t, asyncreply.Config{Backend: storeOnly{shared}, Key: otherKey}, http.NotFoundHandler()), "another key")
		check(t, writer, setup(t, asyncreply.Config{Backend: storeOnly{shared}}, http.NotFoundHandler()), "no key")
	})

	t.Run("SQLite, one file written with one key and read with another", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "asyncreply.db")
		open := func() backend.Backend {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			be, err := sqlite.New(ctx, sqlite.Config{Path: path, Logger: discardLogger})
			if err != nil {
				t.Fatalf("sqlite.New: %v", err)
			}
			return be // stopped by its Middleware's Shutdown
		}
		writer := setup(t, asyncreply.Config{Backend: open(), Key: key}, route("POST /login", asyncreply.Async(login)))
		reader := setup(t, asyncreply.Config{Backend: open(), Key: otherKey, AcceptOnly: true}, http.NotFoundHandler())
		check(t, writer, reader, "another key")
	})
}

// BenchmarkPollSealed: BenchmarkPoll's finished operation with encryption at
// rest and a 64 KiB response, so that what a poll costs beyond reading the
// operation shows: it must not decrypt the body to answer 303.
func BenchmarkPollSealed(b *testing.B) {
	body := strings.Repeat("x", 64<<10)
	app := route("GET /reports/{id}", asyncreply.Async(text(body)))
	h := newBenchMiddleware(b, asyncreply.Config{Inline: true, Key: benchutil.Key}, app)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/reports/7", nil))
	// Inline answers as the first poll would: 303 to the response.
	monitor := strings.TrimSuffix(strings.TrimPrefix(rec.Header().Get("Location"), "http://example.com"), "/response")
	b.Run("status/direct", func(b *testing.B) { runDirect(b, h, "GET", monitor, http.StatusSeeOther) })
	b.Run("response/direct", func(b *testing.B) { runDirect(b, h, "GET", monitor+"/response", http.StatusOK) })
}
