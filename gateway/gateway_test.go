package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendurl"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/gateway"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// bundle is a gateway in front of an upstream, both on httptest servers.
type bundle struct {
	gateway  *httptest.Server
	upstream *httptest.Server
	client   *http.Client // does not follow redirects, so that 303s are seen
	gw       *gateway.Gateway
}

// setup starts upstream and a gateway in front of it. cfg.Upstream is set to
// the upstream's URL unless it is already set.
func setup(t *testing.T, upstream http.Handler, cfg gateway.Config) *bundle {
	t.Helper()
	return setupServing(t, upstream, cfg, httptest.NewUnstartedServer(nil))
}

// setupServing is setup with the gateway served by srv, not started yet,
// whose address a Config may need (ProgressURL).
func setupServing(t *testing.T, upstream http.Handler, cfg gateway.Config, srv *httptest.Server) *bundle {
	t.Helper()
	b := &bundle{upstream: httptest.NewServer(upstream)}
	t.Cleanup(b.upstream.Close)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Upstream == "" {
		cfg.Upstream = b.upstream.URL
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	srv.Config.Handler = gw.Handler()
	srv.Start()
	b.gateway, b.gw = srv, gw
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	t.Cleanup(b.gateway.Close) // runs first: the server, then the gateway
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	b.client = &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return b
}

func (b *bundle) do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func (b *bundle) get(t *testing.T, rawURL string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.do(t, req)
}

// finalResponse polls an operation's monitor URL, long-polling instead of
// sleeping, until it redirects, and returns what the redirect leads to.
func (b *bundle) finalResponse(t *testing.T, monitor string, header ...string) (*http.Response, string) {
	t.Helper()
	for {
		resp, body := b.get(t, monitor, append([]string{"Prefer", "wait=10"}, header...)...)
		switch resp.StatusCode {
		case http.StatusAccepted:
			continue
		case http.StatusSeeOther:
			loc, err := url.Parse(monitor)
			if err != nil {
				t.Fatal(err)
			}
			next, err := loc.Parse(resp.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			return b.get(t, next.String(), header...)
		default:
			t.Fatalf("poll: %d %s", resp.StatusCode, body)
		}
	}
}

// seen is what the upstream saw of a request.
type seen struct {
	method, path, query, body string
	header                    http.Header
	cookie                    string
}

func record(r *http.Request) seen {
	body, _ := io.ReadAll(r.Body)
	c, _ := r.Cookie("session")
	s := seen{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, body: string(body), header: r.Header.Clone()}
	if c != nil {
		s.cookie = c.Value
	}
	return s
}

// slowReport is an upstream whose handler reports each request on seen and
// answers only when release is closed.
func slowReport(seenC chan<- seen, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenC <- record(r)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "text/csv")
		w.Header().Set("X-Report", "7")
		w.Header().Add("Set-Cookie", "session=rotated; Path=/")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "id,total\n7,42\n")
	})
}

func TestAsyncRouteReplaysOriginalRequestToUpstream(t *testing.T) {
	t.Parallel()
	seenC, release := make(chan seen, 1), make(chan struct{})
	b := setup(t, slowReport(seenC, release), gateway.Config{Async: []gateway.Route{{Pattern: "POST /reports/{id}"}}})

	req, _ := http.NewRequest(http.MethodPost, b.gateway.URL+"/reports/7?format=csv&year=2026", strings.NewReader(`{"filter":"all"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer secret-token")
	req.Header.Set(gateway.OperationHeader, "forged")
	req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
	resp, body := b.do(t, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: got %d %s, want 202", resp.StatusCode, body)
	}
	monitor := resp.Header.Get("Location")
	id := path.Base(monitor)

	got := <-seenC // the upstream handler is running, and blocked: the 202 did not wait for it
	if got.method != http.MethodPost || got.path != "/reports/7" || got.query != "format=csv&year=2026" || got.body != `{"filter":"all"}` {
		t.Errorf("upstream saw %s %s?%s %q", got.method, got.path, got.query, got.body)
	}
	if got.cookie != "alice" || got.header.Get("Authorization") != "Bearer secret-token" || got.header.Get("Content-Type") != "application/json" {
		t.Errorf("upstream saw cookie %q, Authorization %q, Content-Type %q", got.cookie, got.header.Get("Authorization"), got.header.Get("Content-Type"))
	}
	gatewayHost := strings.TrimPrefix(b.gateway.URL, "http://")
	if xff, host, proto := got.header.Get("X-Forwarded-For"), got.header.Get("X-Forwarded-Host"), got.header.Get("X-Forwarded-Proto"); xff != "127.0.0.1" || host != gatewayHost || proto != "http" {
		t.Errorf("upstream saw X-Forwarded-For %q, -Host %q, -Proto %q; want 127.0.0.1, %s, http", xff, host, proto, gatewayHost)
	}
	if op := got.header.Values(gateway.OperationHeader); len(op) != 1 || op[0] != id {
		t.Errorf("upstream saw %s %q, want [%s]", gateway.OperationHeader, op, id)
	}
	close(release)

	final, finalBody := b.finalResponse(t, monitor)
	if final.StatusCode != http.StatusCreated || finalBody != "id,total\n7,42\n" {
		t.Errorf("final response: %d %q", final.StatusCode, finalBody)
	}
	if final.Header.Get("X-Report") != "7" || final.Header.Get("Content-Type") != "text/csv" || final.Header.Get("Set-Cookie") != "session=rotated; Path=/" {
		t.Errorf("final response headers: %v", final.Header)
	}
}

func TestNonAsyncRouteIsProxiedUnchanged(t *testing.T) {
	t.Parallel()
	seenC := make(chan seen, 1)
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenC <- record(r)
		w.Header().Set("X-Upstream", "yes")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and stout")
	})
	b := setup(t, upstream, gateway.Config{Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})

	// POST to an async GET route is not async: it passes through too.
	req, _ := http.NewRequest(http.MethodPost, b.gateway.URL+"/reports/7?x=1", strings.NewReader("payload"))
	req.Header.Set(gateway.OperationHeader, "forged")
	req.Header.Set("X-Forwarded-For", "6.6.6.6") // from an untrusted client: replaced
	resp, body := b.do(t, req)
	if resp.StatusCode != http.StatusTeapot || body != "short and stout" || resp.Header.Get("X-Upstream") != "yes" {
		t.Errorf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	got := <-seenC
	if got.method != http.MethodPost || got.path != "/reports/7" || got.query != "x=1" || got.body != "payload" {
		t.Errorf("upstream saw %s %s?%s %q", got.method, got.path, got.query, got.body)
	}
	if v, ok := got.header[gateway.OperationHeader]; ok {
		t.Errorf("a client-sent %s reached the upstream: %q", gateway.OperationHeader, v)
	}
	if xff := got.header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the gateway's own 127.0.0.1", xff)
	}
}

func TestTrustedProxyForwardedHeadersArePassedOn(t *testing.T) {
	t.Parallel()
	seenC := make(chan seen, 1)
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seenC <- record(r) })
	b := setup(t, upstream, gateway.Config{TrustedProxies: mustPrefixes(t, "127.0.0.0/8")})

	resp, _ := b.get(t, b.gateway.URL+"/", "X-Forwarded-For", "203.0.113.9", "X-Forwarded-Proto", "https", "X-Forwarded-Host", "app.example")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d", resp.StatusCode)
	}
	got := <-seenC
	if xff, host, proto := got.header.Get("X-Forwarded-For"), got.header.Get("X-Forwarded-Host"), got.header.Get("X-Forwarded-Proto"); xff != "203.0.113.9, 127.0.0.1" || host != "app.example" || proto != "https" {
		t.Errorf("upstream saw X-Forwarded-For %q, -Host %q, -Proto %q", xff, host, proto)
	}
}

func TestStreamedResponsePassesThroughIncrementally(t *testing.T) {
	t.Parallel()
	// Server-sent events, and any response of unknown length: a stream.
	for _, contentType := range []string{"text/event-stream", "text/plain"} {
		t.Run(contentType, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", contentType)
				io.WriteString(w, "data: first\n\n")
				http.NewResponseController(w).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, "data: second\n\n")
			})
			b := setup(t, upstream, gateway.Config{Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})

			resp, err := b.client.Get(b.gateway.URL + "/events")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			r := bufio.NewReader(resp.Body)
			line, err := r.ReadString('\n') // arrives while the upstream is still blocked
			if err != nil || line != "data: first\n" {
				t.Fatalf("first line: %q, %v", line, err)
			}
			close(release)
			rest, err := io.ReadAll(r)
			if err != nil || string(rest) != "\ndata: second\n\n" {
				t.Errorf("rest: %q, %v", rest, err)
			}
		})
	}
}

// deadUpstream returns the URL of a server that no longer listens.
func deadUpstream(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return srv.URL
}

func TestUnreachableUpstreamFailsWith502(t *testing.T) {
	t.Parallel()
	b := setup(t, http.NotFoundHandler(), gateway.Config{Upstream: deadUpstream(t), Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})

	for name, target := range map[string]string{"pass-through": "/other", "async": "/reports/7"} {
		resp, body := b.get(t, b.gateway.URL+target)
		if name == "async" {
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("%s: got %d %s, want 202", name, resp.StatusCode, body)
			}
			// The operation failed without a response: the poll itself
			// answers 502, rather than 303 to a stored 502.
			monitor := resp.Header.Get("Location")
			for resp.StatusCode == http.StatusAccepted {
				resp, body = b.get(t, monitor, "Prefer", "wait=10")
			}
		}
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: got %d %s, want 502 problem+json", name, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		// The gateway's own problems leave as the library's do: never
		// cached, never sniffed as something else.
		if h := resp.Header; h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: Cache-Control %q, X-Content-Type-Options %q; want no-store, nosniff", name, h.Get("Cache-Control"), h.Get("X-Content-Type-Options"))
		}
		var p struct {
			Type   string `json:"type"`
			Status int    `json:"status"`
			Title  string `json:"title"`
			Detail string `json:"detail"`
		}
		if err := json.Unmarshal([]byte(body), &p); err != nil || p.Type != "about:blank" || p.Status != http.StatusBadGateway || p.Title != "Bad Gateway" || p.Detail == "" {
			t.Errorf("%s: problem document %q: %v", name, body, err)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	ok := "http://127.0.0.1:3000"
	for _, tc := range []struct {
		name  string
		cfg   gateway.Config
		field string
		want  []string // substrings of the error
	}{
		{"no upstream", gateway.Config{}, "Upstream", []string{"required"}},
		{"upstream without scheme", gateway.Config{Upstream: "127.0.0.1:3000"}, "Upstream", []string{"127.0.0.1:3000"}},
		{"relative upstream", gateway.Config{Upstream: "/app"}, "Upstream", []string{"absolute http or https"}},
		{"ftp upstream", gateway.Config{Upstream: "ftp://example.com"}, "Upstream", []string{"absolute http or https"}},
		{"pattern without path", gateway.Config{Upstream: ok, Async: []gateway.Route{{Pattern: "GET reports"}}}, "Async", []string{`"GET reports"`}},
		{"bad wildcard", gateway.Config{Upstream: ok, Async: []gateway.Route{{Pattern: "GET /reports/{id"}}}, "Async", []string{`"GET /reports/{id"`, "wildcard"}},
		{"conflicting patterns", gateway.Config{Upstream: ok, Async: []gateway.Route{{Pattern: "GET /reports/{id}"}, {Pattern: "GET /reports/{name}"}}}, "Async", []string{`"GET /reports/{name}"`, "conflicts"}},
		{"pattern under the monitor prefix", gateway.Config{Upstream: ok, Async: []gateway.Route{{Pattern: "GET /operations/{id}"}}}, "Async", []string{"monitor prefix"}},
		{"bad prefix", gateway.Config{Upstream: ok, Prefix: "ops"}, "Prefix", []string{`"ops"`}},
		{"negative concurrency", gateway.Config{Upstream: ok, Concurrency: -1}, "Concurrency", []string{"negative"}},
		{"negative wait", gateway.Config{Upstream: ok, Wait: -time.Second}, "Wait", []string{"negative"}},
		{"accept-only in memory", gateway.Config{Upstream: ok, AcceptOnly: true}, "AcceptOnly", []string{"in-memory"}},
		{"accept-only in a wrapped memory backend", gateway.Config{Upstream: ok, AcceptOnly: true, Backend: wrappedMemory{memory.New(memory.Config{})}}, "AcceptOnly", []string{"in-memory"}},
		{"inline and accept-only", gateway.Config{Upstream: ok, Inline: true, AcceptOnly: true, Backend: sharedBackend{}}, "AcceptOnly", []string{"Inline"}},
		{"negative route timeout", gateway.Config{Upstream: ok, Async: []gateway.Route{{Pattern: "GET /x", Timeout: -time.Second}}}, "Async", []string{`"GET /x"`, "timeout must not be negative"}},
		{"bad public URL", gateway.Config{Upstream: ok, PublicURL: "app.example"}, "PublicURL", []string{`"app.example"`}},
		{"short key", gateway.Config{Upstream: ok, Key: make([]byte, 16)}, "Key", []string{"32 bytes"}},
		{"negative max watches", gateway.Config{Upstream: ok, MaxWatches: -1}, "MaxWatches", []string{"negative"}},
		{"negative max watches per owner", gateway.Config{Upstream: ok, MaxWatchesPerOwner: -1}, "MaxWatchesPerOwner", []string{"negative"}},
		{"concurrency beside a backend", gateway.Config{Upstream: ok, Concurrency: 2, Backend: sharedBackend{}}, "Concurrency", []string{"memory.Config.Concurrency"}},
		{"bad route notify URL", gateway.Config{Upstream: ok, Async: []gateway.Route{{Pattern: "POST /x", Notify: "hooks.example.com/x"}}}, "Async", []string{`"POST /x"`, "notify"}},
		{"route notify without a secret", gateway.Config{Upstream: ok, Async: []gateway.Route{{Pattern: "POST /x", Notify: "https://hooks.example.com/x"}}}, "Async", []string{"Notify.Secrets"}},
		{"callbacks without a secret", gateway.Config{Upstream: ok, Notify: asyncreply.NotifyConfig{CallbackHosts: []string{"hooks.example.com"}}}, "Notify.CallbackHosts", []string{"Secrets"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, newErr := gateway.New(tc.cfg)
			for name, err := range map[string]error{"New": newErr, "Validate": tc.cfg.Validate()} {
				var ce *gateway.ConfigError
				if !errors.As(err, &ce) || ce.Field != tc.field {
					t.Fatalf("%s: got %v, want a ConfigError for %s", name, err, tc.field)
				}
				for _, want := range tc.want {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s: error %q does not contain %q", name, err, want)
					}
				}
			}
		})
	}
}

func TestValidateReportsEveryInvalidField(t *testing.T) {
	t.Parallel()
	err := gateway.Config{Upstream: "localhost:3000", Prefix: "ops", Owner: gateway.OwnerCookie(""), Wait: -time.Second}.Validate()
	var fields []string
	for _, err := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *gateway.ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("%v is not a ConfigError", err)
		}
		fields = append(fields, ce.Field)
	}
	slices.Sort(fields)
	if want := []string{"Owner", "Prefix", "Upstream", "Wait"}; !slices.Equal(fields, want) {
		t.Errorf("invalid fields %q, want %q: %v", fields, want, err)
	}
}

func TestAsyncRouteOnSQLite(t *testing.T) {
	t.Parallel()
	be, err := backendurl.Open(t.Context(), "sqlite://"+t.TempDir()+"/asyncreply.db", backendurl.Options{Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	seenC, release := make(chan seen, 1), make(chan struct{})
	close(release)
	b := setup(t, slowReport(seenC, release), gateway.Config{Backend: be, Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})

	resp, body := b.get(t, b.gateway.URL+"/reports/7", "Cookie", "session=bob")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.StatusCode, body)
	}
	final, finalBody := b.finalResponse(t, resp.Header.Get("Location"))
	if final.StatusCode != http.StatusCreated || finalBody != "id,total\n7,42\n" {
		t.Errorf("final response: %d %q", final.StatusCode, finalBody)
	}
	if got := <-seenC; got.cookie != "bob" {
		t.Errorf("upstream saw cookie %q", got.cookie)
	}
}

func mustPrefixes(t *testing.T, cidrs ...string) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func TestUpgradePassesThrough(t *testing.T) {
	t.Parallel()
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		rw.Flush()
		line, _ := rw.ReadString('\n')
		rw.WriteString("echo: " + line)
		rw.Flush()
	})
	b := setup(t, upstream, gateway.Config{Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})

	conn, err := net.Dial("tcp", strings.TrimPrefix(b.gateway.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /socket HTTP/1.1\r\nHost: example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("got %d, want 101", resp.StatusCode)
	}
	io.WriteString(conn, "ping\n")
	if line, err := r.ReadString('\n'); err != nil || line != "echo: ping\n" {
		t.Errorf("over the upgraded connection: %q, %v", line, err)
	}
}

func TestConcurrencyBoundsReplays(t *testing.T) {
	t.Parallel()
	seenC, release := make(chan seen, 2), make(chan struct{})
	b := setup(t, slowReport(seenC, release), gateway.Config{
		Backend:     nil, // the gateway's own, bounded by Concurrency
		Concurrency: 1,
		Async:       []gateway.Route{{Pattern: "GET /reports/{id}"}},
	})
	first, _ := b.get(t, b.gateway.URL+"/reports/1")
	<-seenC // the first replay is running, and holds the only slot
	second, _ := b.get(t, b.gateway.URL+"/reports/2")
	if first.StatusCode != http.StatusAccepted || second.StatusCode != http.StatusAccepted {
		t.Fatalf("submits: %d, %d; want 202 at once for both", first.StatusCode, second.StatusCode)
	}

	// Given a second to start, the second replay still waits for the slot.
	resp, body := b.get(t, second.Header.Get("Location"), "Prefer", "wait=1")
	var doc struct{ Status string }
	if err := json.Unmarshal([]byte(body), &doc); err != nil || resp.StatusCode != http.StatusAccepted || doc.Status != "NotStarted" {
		t.Errorf("second operation while the first runs: %d %s", resp.StatusCode, body)
	}
	select {
	case s := <-seenC:
		t.Errorf("a second replay reached the upstream while the first ran: %s", s.path)
	default:
	}

	close(release)
	for _, op := range []*http.Response{first, second} {
		if resp, _ := b.finalResponse(t, op.Header.Get("Location")); resp.StatusCode != http.StatusCreated {
			t.Errorf("final response: %d", resp.StatusCode)
		}
	}
}

func TestRouteOptionsApplyToTheirRouteOnly(t *testing.T) {
	seenC := make(chan seen, 2)
	release := make(chan struct{})
	defer close(release)
	b := setup(t, slowReport(seenC, release), gateway.Config{Async: []gateway.Route{
		{Pattern: "GET /reports/{id}", Timeout: 50 * time.Millisecond},
		{Pattern: "GET /exports/{id}"},
	}})

	resp, _ := b.get(t, b.gateway.URL+"/reports/1")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit = %d, want 202", resp.StatusCode)
	}
	<-seenC
	final, body := b.get(t, resp.Header.Get("Location"), "Prefer", "wait=10")
	if final.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("poll of the route with a 50ms timeout = %d %s, want 504", final.StatusCode, body)
	}

	other, _ := b.get(t, b.gateway.URL+"/exports/1")
	<-seenC
	if poll, body := b.get(t, other.Header.Get("Location"), "Prefer", "wait=1"); poll.StatusCode != http.StatusAccepted {
		t.Errorf("poll of the route with the default timeout = %d %s, want 202: still running", poll.StatusCode, body)
	}
}

// rawUpstream is an upstream written by hand on a TCP listener, for answers
// no net/http server gives. Each connection's request head is read, raw, and
// handed to answer with the connection, which is closed when answer returns.
func rawUpstream(t *testing.T, answer func(conn *net.TCPConn, head string)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				var head strings.Builder
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
					head.WriteString(line)
				}
				answer(conn.(*net.TCPConn), head.String())
			})
		}
	})
	return "http://" + ln.Addr().String()
}

// signalingTransport tells on responded each time the upstream's response
// head has arrived, or the round trip failed.
type signalingTransport struct {
	http.RoundTripper
	responded chan struct{}
}

func (s signalingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	defer func() {
		select {
		case s.responded <- struct{}{}:
		default: // nobody is waiting for this one
		}
	}()
	return s.RoundTripper.RoundTrip(r)
}

func TestTruncatedUpstreamBodyIsNeverStored(t *testing.T) {
	t.Parallel()
	const partial = "0123456789"
	for _, tc := range []struct {
		name   string
		answer func(conn *net.TCPConn, responded <-chan struct{})
	}{
		{"short of its Content-Length", func(conn *net.TCPConn, _ <-chan struct{}) {
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"+partial)
		}},
		{"chunked without its last chunk", func(conn *net.TCPConn, _ <-chan struct{}) {
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\na\r\n"+partial+"\r\n")
		}},
		{"connection reset mid-body", func(conn *net.TCPConn, responded <-chan struct{}) {
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"+partial)
			<-responded       // the gateway is reading the body now
			conn.SetLinger(0) // close with a RST
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			responded := make(chan struct{}, 1)
			upstream := rawUpstream(t, func(conn *net.TCPConn, _ string) { tc.answer(conn, responded) })
			transport := &http.Transport{}
			t.Cleanup(transport.CloseIdleConnections)
			b := setup(t, http.NotFoundHandler(), gateway.Config{
				Upstream:  upstream,
				Transport: signalingTransport{transport, responded},
				Async:     []gateway.Route{{Pattern: "GET /reports/{id}"}},
			})

			// Replayed: the operation fails as 502, and nothing is served
			// as its response.
			resp, body := b.get(t, b.gateway.URL+"/reports/7")
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("submit: %d %s, want 202", resp.StatusCode, body)
			}
			monitor := resp.Header.Get("Location")
			for resp.StatusCode == http.StatusAccepted {
				resp, body = b.get(t, monitor, "Prefer", "wait=10")
			}
			if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("poll: %d %s %s, want 502 problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			resp, body = b.get(t, monitor+"/response")
			if resp.StatusCode == http.StatusOK || strings.Contains(body, partial) {
				t.Errorf("response: %d %q, want no stored response", resp.StatusCode, body)
			}

			// Passed through: the client sees the response break off too,
			// before its head (still buffered when the gateway aborts) or
			// in its body.
			resp, err := b.client.Get(b.gateway.URL + "/other")
			if err == nil {
				var got []byte
				got, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Errorf("pass-through: %d %q read to its end, want the connection aborted", resp.StatusCode, got)
				}
			}
		})
	}
}

// echoHeadUpstream is an upstream answering every request with the header
// lines it received, raw, one per line of its body.
func echoHeadUpstream(t *testing.T) string {
	return rawUpstream(t, func(conn *net.TCPConn, head string) {
		_, lines, _ := strings.Cut(head, "\r\n") // without the request line
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(lines), lines)
	})
}

// headerLines returns the values of the header lines of head that a server
// reading underscores as dashes, in any case, takes for name.
func headerLines(head, name string) []string {
	var values []string
	for line := range strings.SplitSeq(head, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), name) {
			values = append(values, strings.TrimSpace(v))
		}
	}
	return values
}

// spoofing are headers a client sends to pass for a replay, or for a proxy
// reporting another address or HTTPS, in the spellings that Rack, WSGI and
// PHP read as the real ones.
var spoofing = map[string]string{
	"Asyncreply_Operation": "forged", "asyncreply_OPERATION": "forged", "Asyncreply-Operation": "forged",
	"X-Forwarded-Ssl": "on", "X_Forwarded_Ssl": "on", "X-Forwarded-Scheme": "https", "X_Forwarded_Scheme": "https",
	"X-Real-Ip": "6.6.6.6", "X_Real_IP": "6.6.6.6", "Client-Ip": "6.6.6.6", "CLIENT_IP": "6.6.6.6",
	"Forwarded": "for=6.6.6.6;proto=https", "X-Forwarded-Port": "443",
	"X_Forwarded_For": "6.6.6.6", "X_Forwarded_Proto": "https", "X_Forwarded_Host": "evil.example",
}

func spoofedRequest(t *testing.T, target string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, value := range spoofing {
		req.Header[name] = []string{value} // as spelled: net/http sends map keys unchanged
	}
	req.Header.Set("X-App", "kept")
	return req
}

func TestClientCannotSpoofReplayOrProxyHeaders(t *testing.T) {
	t.Parallel()
	be := memory.New(memory.Config{Concurrency: 1})
	b := setup(t, http.NotFoundHandler(), gateway.Config{Upstream: echoHeadUpstream(t), Backend: be, Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})

	check := func(t *testing.T, head, operation string) {
		t.Helper()
		if got := headerLines(head, gateway.OperationHeader); operation == "" && len(got) > 0 || operation != "" && !slices.Equal(got, []string{operation}) {
			t.Errorf("upstream saw %s lines %q, want [%s]", gateway.OperationHeader, got, operation)
		}
		for _, name := range []string{"X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Real-Ip", "Client-Ip", "Forwarded", "X-Forwarded-Port"} {
			if got := headerLines(head, name); len(got) > 0 {
				t.Errorf("upstream saw the client's %s: %q", name, got)
			}
		}
		for name, want := range map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": strings.TrimPrefix(b.gateway.URL, "http://")} {
			if got := headerLines(head, name); !slices.Equal(got, []string{want}) {
				t.Errorf("upstream saw %s lines %q, want only the gateway's [%s]", name, got, want)
			}
		}
		if got := headerLines(head, "X-App"); !slices.Equal(got, []string{"kept"}) {
			t.Errorf("upstream saw X-App %q: the application's own headers must pass", got)
		}
	}

	t.Run("pass-through", func(t *testing.T) {
		resp, head := b.do(t, spoofedRequest(t, b.gateway.URL+"/other"))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("pass-through: %d %s", resp.StatusCode, head)
		}
		check(t, head, "")
	})
	t.Run("replay", func(t *testing.T) {
		resp, body := b.do(t, spoofedRequest(t, b.gateway.URL+"/reports/7"))
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit: %d %s", resp.StatusCode, body)
		}
		monitor := resp.Header.Get("Location")
		id := path.Base(monitor)
		op, err := be.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		recorded := strings.ReplaceAll(strings.ToLower(string(op.Request)), "_", "-") // stored in clear: no Key
		for _, name := range []string{"asyncreply-operation", "x-forwarded-ssl", "x-real-ip", "client-ip"} {
			if strings.Contains(recorded, name) {
				t.Errorf("the recorded request holds the client's %s", name)
			}
		}
		_, head := b.finalResponse(t, monitor)
		check(t, head, id)
	})
}

func TestTrustedProxyKeepsItsForwardingHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t, http.NotFoundHandler(), gateway.Config{Upstream: echoHeadUpstream(t), TrustedProxies: mustPrefixes(t, "127.0.0.0/8")})
	_, head := b.do(t, spoofedRequest(t, b.gateway.URL+"/other"))
	for name, want := range map[string]string{"X-Forwarded-Ssl": "on", "X-Forwarded-Scheme": "https", "X-Real-Ip": "6.6.6.6", "Client-Ip": "6.6.6.6", "X-Forwarded-Port": "443"} {
		// Only the spelling a proxy sends: an underscore is a client's.
		if got := headerLines(head, name); !slices.Equal(got, []string{want}) {
			t.Errorf("upstream saw %s lines %q, want the proxy's [%s]", name, got, want)
		}
	}
	if got := headerLines(head, gateway.OperationHeader); len(got) > 0 {
		t.Errorf("upstream saw %s %q from a trusted proxy's client", gateway.OperationHeader, got)
	}
	if got := headerLines(head, "X-Forwarded-For"); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Errorf("upstream saw X-Forwarded-For lines %q, want [127.0.0.1]: X_Forwarded_For is no proxy's", got)
	}
}

// sharedBackend stands for a backend other processes share, as AcceptOnly
// needs; New rejects the Config before using it.
type sharedBackend struct{ backend.Backend }

// wrappedMemory is an in-memory backend in a wrapper, as instrumentation
// would wrap it; it keeps its operations in this process all the same.
type wrappedMemory struct{ *memory.Backend }

func TestInlineOperationIsFinishedWhenTheSubmitReturns(t *testing.T) {
	t.Parallel()
	seenC, release := make(chan seen, 1), make(chan struct{})
	close(release)
	b := setup(t, slowReport(seenC, release), gateway.Config{Inline: true, Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})

	resp, body := b.get(t, b.gateway.URL+"/reports/7")
	select {
	case got := <-seenC:
		if got.path != "/reports/7" {
			t.Errorf("upstream saw %s", got.path)
		}
	default:
		t.Fatalf("the submit returned (%d %s) before the upstream was asked", resp.StatusCode, body)
	}
	location, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || location.Path == "" {
		t.Fatalf("submit: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	next, _ := url.Parse(b.gateway.URL)
	if poll, body := b.get(t, next.ResolveReference(location).String()); poll.StatusCode == http.StatusAccepted {
		t.Errorf("poll right after the submit: %d %s, want the operation finished", poll.StatusCode, body)
	}
}

// cannedTransport answers every request at once, so that a benchmark
// measures the gateway rather than an upstream.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode:    http.StatusOK,
		Header:        http.Header{"Content-Type": {"text/plain"}},
		Body:          io.NopCloser(strings.NewReader("hello")),
		ContentLength: 5,
		Request:       r,
	}, nil
}

// BenchmarkPassThrough is the gateway's own cost of proxying a request
// unchanged, with and without the owner cookie of the "issue-cookie" mode.
func BenchmarkPassThrough(b *testing.B) {
	for _, bc := range []struct {
		name   string
		owner  gateway.Owner
		cookie string
	}{
		{"no owner", gateway.Owner{}, "session=abc"},
		{"issue-cookie, has one", gateway.OwnerIssuedCookie(), "session=abc; " + gateway.OwnerCookieName + "=" + unknownID},
		{"issue-cookie, issued one", gateway.OwnerIssuedCookie(), "session=abc"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			gw, err := gateway.New(gateway.Config{Upstream: "http://127.0.0.1:3000", Transport: cannedTransport{}, Owner: bc.owner, Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})
			if err != nil {
				b.Fatal(err)
			}
			defer gw.Shutdown(context.Background())
			h := gw.Handler()
			req := httptest.NewRequest(http.MethodGet, "http://app.example/fast", nil)
			req.Header.Set("Cookie", bc.cookie)
			req.Header.Set("Accept", "*/*")
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
