package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/client"
)

// TestMain fails the run if a test leaves a goroutine behind: RoundTrip
// must not start any that outlive it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait in these tests, so that a bug fails a test
// instead of hanging the run.
const waitLimit = 10 * time.Second

// Intervals that keep the tests quick: an asyncreply server's Retry-After of
// one second is capped to testMaxPoll.
const (
	testMinPoll = 10 * time.Millisecond
	testMaxPoll = 50 * time.Millisecond
)

// requestLog records the requests a server receives.
type requestLog struct {
	mu       sync.Mutex
	requests []*http.Request // headers and URLs only
}

// wrap records each request, then calls hook (if any), then next.
func (l *requestLog) wrap(next http.Handler, hook func(*http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.requests = append(l.requests, r.Clone(context.Background()))
		l.mu.Unlock()
		if hook != nil {
			hook(r)
		}
		next.ServeHTTP(w, r)
	})
}

// Kinds of requests to an asyncreply server.
const (
	submitted = "submit"
	polled    = "poll"
	watched   = "events"
	collected = "result"
	deleted   = "delete"
)

func kind(r *http.Request) string {
	rest, monitor := strings.CutPrefix(r.URL.Path, asyncreply.DefaultPrefix)
	switch {
	case !monitor:
		return submitted
	case r.Method == http.MethodDelete:
		return deleted
	case strings.HasSuffix(rest, "/events"):
		return watched
	case strings.HasSuffix(rest, "/response"):
		return collected
	}
	return polled
}

// count returns how many requests of each kind were received.
func (l *requestLog) count() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := make(map[string]int)
	for _, r := range l.requests {
		n[kind(r)]++
	}
	return n
}

func (l *requestLog) all() []*http.Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.requests)
}

// served is an application behind asyncreply, on a test server.
type served struct {
	*httptest.Server
	log requestLog
}

// serve serves routes through an asyncreply Middleware configured with cfg.
// hook, when set, sees each request as it arrives.
func serve(t testing.TB, cfg asyncreply.Config, routes http.Handler, hook func(*http.Request)) *served {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	ar, err := asyncreply.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &served{}
	s.Server = httptest.NewServer(s.log.wrap(ar.Handler(routes), hook))
	t.Cleanup(func() {
		s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := ar.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s
}

// transport is a Transport to srv with short poll intervals.
func transport(srv *httptest.Server) *client.Transport {
	return &client.Transport{Base: srv.Client().Transport, MinPollInterval: testMinPoll, MaxPollInterval: testMaxPoll}
}

// The ways a Transport follows an operation.
var modes = []struct {
	name  string
	tweak func(*client.Transport)
}{
	{"events", func(*client.Transport) {}},
	{"long-poll", func(t *client.Transport) { t.DisableEvents = true }},
	{"polling", func(t *client.Transport) { t.DisableEvents, t.LongPoll = true, -1 }},
}

// reply is a response read whole.
type reply struct {
	code   int
	header http.Header
	body   string
}

func do(t *testing.T, c *http.Client, req *http.Request) reply {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return reply{resp.StatusCode, resp.Header, string(body)}
}

func newRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// createReport answers as a slow endpoint might: a status other than 200,
// headers of its own, a cookie, and a body made of the request's.
func createReport(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "text/csv")
	w.Header().Set("X-Report", "quarterly")
	http.SetCookie(w, &http.Cookie{Name: "seen", Value: "1"})
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "report for %s\n%s", r.Header.Get("Authorization"), body)
}

func TestFollowsToTheSynchronousResponse(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			mux := http.NewServeMux()
			mux.HandleFunc("POST /sync", createReport)
			mux.Handle("POST /async", asyncreply.Async(http.HandlerFunc(createReport)))
			srv := serve(t, asyncreply.Config{}, mux, nil)
			tr := transport(srv.Server)
			mode.tweak(tr)
			c := client.New(tr)

			call := func(path string) reply {
				req := newRequest(t, http.MethodPost, srv.URL+path, "rows=1000")
				req.Header.Set("Authorization", "Bearer alice")
				return do(t, c, req)
			}
			sync, async := call("/sync"), call("/async")
			if async.code != sync.code || async.body != sync.body {
				t.Errorf("asynchronous call = %d %q, want the synchronous %d %q", async.code, async.body, sync.code, sync.body)
			}
			for _, name := range []string{"Content-Type", "X-Report", "Set-Cookie"} {
				if got, want := async.header.Values(name), sync.header.Values(name); !slices.Equal(got, want) {
					t.Errorf("%s = %q, want the synchronous %q", name, got, want)
				}
			}
			if n := srv.log.count(); n[submitted] != 2 {
				t.Errorf("requests by kind %v, want 2 submits (one per call): the body is sent once", n)
			}
		})
	}
}

func TestFailuresKeepTheirStatus(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("GET /slow", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // outlives the operation's timeout
	})))
	mux.Handle("GET /broken", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("the report generator crashed")
	})))
	srv := serve(t, asyncreply.Config{Timeout: 100 * time.Millisecond}, mux, nil)
	for _, mode := range modes {
		for path, want := range map[string]int{"/slow": http.StatusGatewayTimeout, "/broken": http.StatusInternalServerError} {
			t.Run(mode.name+path, func(t *testing.T) {
				t.Parallel()
				tr := transport(srv.Server)
				mode.tweak(tr)
				got := do(t, client.New(tr), newRequest(t, http.MethodGet, srv.URL+path, ""))
				if got.code != want || got.header.Get("Content-Type") != "application/problem+json" {
					t.Errorf("GET %s = %d %s %s, want %d with problem details", path, got.code, got.header.Get("Content-Type"), got.body, want)
				}
			})
		}
	}
}

func TestContextEndDeletesTheOperation(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			started := make(chan struct{})
			canceled := make(chan struct{})
			mux := http.NewServeMux()
			mux.Handle("GET /export", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				select {
				case <-r.Context().Done():
					close(canceled)
				case <-time.After(waitLimit):
				}
			})))
			following := make(chan struct{})
			var once sync.Once
			srv := serve(t, asyncreply.Config{}, mux, func(r *http.Request) {
				if kind(r) != submitted {
					once.Do(func() { close(following) })
				}
			})
			tr := transport(srv.Server)
			mode.tweak(tr)

			// Cancel once the handler runs and the caller has its 202: a
			// context that ends before the 202 arrives leaves nothing to
			// delete, since the monitor URL is not known yet.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				defer cancel()
				for _, ch := range []<-chan struct{}{following, started} {
					select {
					case <-ch:
					case <-time.After(waitLimit):
						return
					}
				}
			}()
			req := newRequest(t, http.MethodGet, srv.URL+"/export", "").WithContext(ctx)
			resp, err := client.New(tr).Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET /export = %d, want the context's error", resp.StatusCode)
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("GET /export: %v, want context.Canceled", err)
			}
			select {
			case <-canceled:
			case <-time.After(waitLimit):
				t.Fatal("the handler's context was not canceled")
			}
			requests := srv.log.all()
			var monitor string
			for _, r := range requests {
				if kind(r) == deleted {
					monitor = srv.URL + r.URL.Path
				}
			}
			if monitor == "" {
				t.Fatal("no DELETE reached the server")
			}
			if got := do(t, srv.Client(), newRequest(t, http.MethodGet, monitor, "")); got.code != http.StatusNotFound {
				t.Errorf("GET %s after the DELETE = %d, want 404", monitor, got.code)
			}
		})
	}
}

func TestProgressIsReported(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		if mode.name == "long-poll" {
			continue // a long poll returns when the operation ends, not when it progresses
		}
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			seen := make(chan int, 100)
			mux := http.NewServeMux()
			mux.Handle("GET /report", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for _, percent := range []int{10, 50, 90} {
					asyncreply.ReportProgress(r.Context(), percent, fmt.Sprintf("step %d", percent))
					// Go on once the caller has seen it, so that no step is
					// skipped between two polls.
					if !receiveValue(r.Context(), seen, percent) {
						return
					}
				}
				fmt.Fprint(w, "done")
			})))
			srv := serve(t, asyncreply.Config{}, mux, nil)
			tr := transport(srv.Server)
			mode.tweak(tr)
			var reported []client.Progress
			tr.Progress = func(req *http.Request, p client.Progress) {
				if req.URL.Path != "/report" {
					t.Errorf("progress for %s, want the caller's request /report", req.URL.Path)
				}
				reported = append(reported, p)
				seen <- p.Percent
			}
			if got := do(t, client.New(tr), newRequest(t, http.MethodGet, srv.URL+"/report", "")); got.body != "done" {
				t.Fatalf("GET /report = %d %q", got.code, got.body)
			}
			var percents []int
			for _, p := range reported {
				percents = append(percents, p.Percent)
				if !strings.HasPrefix(p.Operation, srv.URL+asyncreply.DefaultPrefix) {
					t.Errorf("progress of operation %q, want a monitor URL", p.Operation)
				}
				if p.Percent > 0 && p.Percent < 100 && p.Message != fmt.Sprintf("step %d", p.Percent) {
					t.Errorf("progress %d%% with message %q", p.Percent, p.Message)
				}
			}
			if !slices.IsSorted(percents) || !isSubsequence([]int{10, 50, 90, 100}, percents) {
				t.Errorf("reported percents %v, want increasing through 10, 50, 90 and 100", percents)
			}
			if last := reported[len(reported)-1]; last.Status != "Succeeded" {
				t.Errorf("last progress %+v, want status Succeeded", last)
			}
		})
	}
}

// receiveValue reads ch until want arrives (true), or ctx ends or waitLimit
// passes (false).
func receiveValue(ctx context.Context, ch <-chan int, want int) bool {
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		select {
		case v := <-ch:
			if v == want {
				return true
			}
		case <-ctx.Done():
			return false
		case <-timeout.C:
			return false
		}
	}
}

func isSubsequence(sub, seq []int) bool {
	for _, v := range seq {
		if len(sub) > 0 && sub[0] == v {
			sub = sub[1:]
		}
	}
	return len(sub) == 0
}

// gatedReport is an endpoint whose handler waits until open is closed.
func gatedReport(open <-chan struct{}) http.Handler {
	return asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-open:
			fmt.Fprint(w, "ready")
		case <-r.Context().Done():
		}
	}))
}

func TestUsesEventsWhenOffered(t *testing.T) {
	t.Parallel()
	open := make(chan struct{})
	var once sync.Once
	mux := http.NewServeMux()
	mux.Handle("GET /report", gatedReport(open))
	srv := serve(t, asyncreply.Config{}, mux, func(r *http.Request) {
		if kind(r) == watched {
			once.Do(func() { close(open) }) // finish while the stream is open
		}
	})
	if got := do(t, client.New(transport(srv.Server)), newRequest(t, http.MethodGet, srv.URL+"/report", "")); got.body != "ready" {
		t.Fatalf("GET /report = %d %q", got.code, got.body)
	}
	want := map[string]int{submitted: 1, watched: 1, collected: 1}
	if n := srv.log.count(); fmt.Sprint(n) != fmt.Sprint(want) {
		t.Errorf("requests by kind %v, want %v: one event stream and no poll", n, want)
	}
}

func TestLongPolls(t *testing.T) {
	t.Parallel()
	open := make(chan struct{})
	var once sync.Once
	mux := http.NewServeMux()
	mux.Handle("GET /report", gatedReport(open))
	srv := serve(t, asyncreply.Config{}, mux, func(r *http.Request) {
		if kind(r) == polled && r.Header.Get("Prefer") != "" {
			once.Do(func() { close(open) }) // finish while the poll is held
		}
	})
	tr := transport(srv.Server)
	tr.DisableEvents = true
	if got := do(t, client.New(tr), newRequest(t, http.MethodGet, srv.URL+"/report", "")); got.body != "ready" {
		t.Fatalf("GET /report = %d %q", got.code, got.body)
	}
	want := map[string]int{submitted: 1, polled: 1, collected: 1}
	if n := srv.log.count(); fmt.Sprint(n) != fmt.Sprint(want) {
		t.Errorf("requests by kind %v, want %v: one poll, held until the end", n, want)
	}
	for _, r := range srv.log.all() {
		if kind(r) == polled && r.Header.Get("Prefer") != "wait=20" {
			t.Errorf("poll with Prefer %q, want wait=20 (DefaultLongPoll)", r.Header.Get("Prefer"))
		}
	}
}

func TestRespondAsyncOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("GET /report", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ready")
	})))
	srv := serve(t, asyncreply.Config{}, mux, nil)
	for _, respondAsync := range []bool{false, true} {
		tr := transport(srv.Server)
		tr.RespondAsync = respondAsync
		req := newRequest(t, http.MethodGet, srv.URL+"/report", "")
		if got := do(t, client.New(tr), req); got.body != "ready" {
			t.Fatalf("GET /report = %d %q", got.code, got.body)
		}
		if req.Header.Get("Prefer") != "" {
			t.Errorf("the caller's request was changed: Prefer %q", req.Header.Get("Prefer"))
		}
	}
	var prefers []string
	for _, r := range srv.log.all() {
		if kind(r) == submitted {
			prefers = append(prefers, r.Header.Get("Prefer"))
		}
	}
	if want := []string{"", "respond-async"}; !slices.Equal(prefers, want) {
		t.Errorf("submits' Prefer headers %q, want %q", prefers, want)
	}
}

func TestInlineOperationsNeedNoPoll(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("GET /report", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ready")
	})))
	srv := serve(t, asyncreply.Config{Inline: true}, mux, nil)
	if got := do(t, client.New(transport(srv.Server)), newRequest(t, http.MethodGet, srv.URL+"/report", "")); got.body != "ready" {
		t.Fatalf("GET /report = %d %q", got.code, got.body)
	}
	// The 202's status document already says Succeeded and links the response.
	want := map[string]int{submitted: 1, collected: 1}
	if n := srv.log.count(); fmt.Sprint(n) != fmt.Sprint(want) {
		t.Errorf("requests by kind %v, want %v", n, want)
	}
}
