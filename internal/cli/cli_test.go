package cli

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply/gateway"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestParseGatewayFlags(t *testing.T) {
	t.Parallel()
	o, err := parseGateway([]string{
		"--listen", "0.0.0.0:9000", "--upstream", "http://127.0.0.1:3000",
		"--async", "GET /reports/{id}", "--async", "POST /exports",
		"--wait", "2s", "--backend", "memory:", "--concurrency", "3", "--prefix", "/ops/",
		"--retention", "1h", "--timeout", "5m", "--public-url", "https://app.example",
		"--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "192.168.1.1",
		"--owner", "upstream:/whoami",
		"--key", strings.Repeat("ab", 32),
		"--inline", "--read-timeout", "30s", "--idle-timeout", "5m",
		"--max-watches", "100", "--max-watches-per-owner", "5",
		"--heartbeat", "2s",
	}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := &gatewayOptions{
		listen: "0.0.0.0:9000", upstream: "http://127.0.0.1:3000",
		async: asyncFlag("GET /reports/{id}", "POST /exports"),
		wait:  2 * time.Second, backend: "memory:", concurrency: 3, prefix: "/ops/",
		retention: time.Hour, timeout: 5 * time.Minute, publicURL: "https://app.example",
		trustedProxies: prefixList{list[netip.Prefix]{values: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32")}}},
		owner:          "upstream:/whoami",
		key:            keyFlag{bytes.Repeat([]byte{0xab}, 32)},
		inline:         true,
		timeouts:       serverTimeouts{read: 30 * time.Second, idle: 5 * time.Minute},
		maxWatches:     100, maxWatchesPerOwner: 5,
		heartbeat: 2 * time.Second,
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("got  %+v\nwant %+v", o, want)
	}
	cfg, err := gatewayConfig(o, nil)
	if err != nil || !cfg.Inline || cfg.Owner != gateway.OwnerUpstream("/whoami") || cfg.MaxWatches != 100 || cfg.MaxWatchesPerOwner != 5 {
		t.Errorf("gateway.Config from the flags: Inline %t, Owner %v, MaxWatches %d, MaxWatchesPerOwner %d, %v", cfg.Inline, cfg.Owner, cfg.MaxWatches, cfg.MaxWatchesPerOwner, err)
	}
}

// A worker's --heartbeat comes from the environment, or from the config
// file that gateways and workers share.
func TestWorkerHeartbeat(t *testing.T) {
	t.Parallel()
	o, err := parseWorker([]string{"--upstream", "http://127.0.0.1:3000"}, env(map[string]string{"ASYNCREPLY_HEARTBEAT": "1s"}), io.Discard)
	if err != nil || o.heartbeat != time.Second {
		t.Errorf("ASYNCREPLY_HEARTBEAT=1s: heartbeat %v, %v; want 1s", o.heartbeat, err)
	}
	path := writeConfig(t, "heartbeat: 2s\n")
	o, err = parseWorker([]string{"--config", path, "--upstream", "http://127.0.0.1:3000"}, env(nil), io.Discard)
	if err != nil || o.heartbeat != 2*time.Second {
		t.Errorf("heartbeat: 2s in the config file: heartbeat %v, %v; want 2s", o.heartbeat, err)
	}
}

func TestParseGatewayDefaults(t *testing.T) {
	t.Parallel()
	o, err := parseGateway([]string{"--upstream", "http://127.0.0.1:3000"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.listen != "127.0.0.1:8080" || o.backend != "sqlite://./asyncreply.db" || o.concurrency != 4 || o.prefix != "/operations/" || o.wait != 0 {
		t.Errorf("defaults: %+v", o)
	}
	if o.inline || o.timeouts != (serverTimeouts{read: DefaultReadTimeout, idle: DefaultIdleTimeout}) {
		t.Errorf("defaults: inline %t, timeouts %+v", o.inline, o.timeouts)
	}
}

func TestParseGatewayEnvironment(t *testing.T) {
	t.Parallel()
	vars := map[string]string{
		"ASYNCREPLY_UPSTREAM":      "http://127.0.0.1:3000",
		"ASYNCREPLY_ASYNC":         "GET /reports/{id}; POST /exports",
		"ASYNCREPLY_WAIT":          "3s",
		"ASYNCREPLY_PUBLIC_URL":    "https://env.example",
		"ASYNCREPLY_TRUSTED_PROXY": "10.0.0.0/8",
		"ASYNCREPLY_CONCURRENCY":   "7",
		"ASYNCREPLY_OWNER":         "issue-cookie",
	}
	o, err := parseGateway(nil, env(vars), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.upstream != "http://127.0.0.1:3000" || o.wait != 3*time.Second || o.publicURL != "https://env.example" || o.concurrency != 7 || o.owner != "issue-cookie" {
		t.Errorf("from the environment: %+v", o)
	}
	if want := routes("GET /reports/{id}", "POST /exports"); !reflect.DeepEqual(o.async.values, want) {
		t.Errorf("async from the environment: %q, want %q", o.async.values, want)
	}

	// The command line wins, and replaces rather than extends a list.
	o, err = parseGateway([]string{"--wait", "1s", "--async", "GET /slow"}, env(vars), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.wait != time.Second || !reflect.DeepEqual(o.async.values, routes("GET /slow")) {
		t.Errorf("command line over environment: wait %s, async %q", o.wait, o.async.values)
	}
	if len(o.trustedProxies.values) != 1 {
		t.Errorf("trusted proxies from the environment: %v", o.trustedProxies.values)
	}
}

func TestGatewayHelpListsEveryFlag(t *testing.T) {
	t.Parallel()
	var stdout, stderr strings.Builder
	if code := Run(t.Context(), []string{"gateway", "--help"}, env(nil), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
	help := stdout.String()
	for _, name := range []string{"listen", "upstream", "async", "wait", "backend", "concurrency", "prefix", "retention", "timeout", "public-url", "trusted-proxy", "owner", "inline", "read-timeout", "idle-timeout", "max-watches", "max-watches-per-owner", "heartbeat", "config"} {
		re := regexp.MustCompile(`(?m)^  --` + regexp.QuoteMeta(name) + ` .*\n.*\n\s+default: .+; env: ` + envName(name) + `$`)
		if !re.MatchString(help) {
			t.Errorf("--help does not list --%s with its default and environment variable", name)
		}
	}
	for _, want := range []string{"default: 127.0.0.1:8080", "default: sqlite://./asyncreply.db", "default: 4;", "default: 1m0s;", "default: 2m0s;", "only key", "issue-cookie", "upstream:/whoami", "NOT\ncookie:_myapp_session"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help does not say %q:\n%s", want, help)
		}
	}
}

func TestBadConfigurationExits2NamingTheFlag(t *testing.T) {
	t.Parallel()
	up := []string{"--upstream", "http://127.0.0.1:3000"}
	for _, tc := range []struct {
		name string
		args []string
		vars map[string]string
		want []string
	}{
		{"unknown flag", []string{"gateway", "--bogus"}, nil, []string{"bogus"}},
		{"missing upstream", []string{"gateway"}, nil, []string{"--upstream", "required"}},
		{"bad upstream", []string{"gateway", "--upstream", "localhost:3000"}, nil, []string{"--upstream", "localhost:3000"}},
		{"bad duration", append([]string{"gateway", "--wait", "soon"}, up...), nil, []string{"-wait", "soon"}},
		{"bad pattern", append([]string{"gateway", "--async", "GET /reports/{id"}, up...), nil, []string{"--async", `"GET /reports/{id"`}},
		{"bad trusted proxy", append([]string{"gateway", "--trusted-proxy", "10.0.0.0/99"}, up...), nil, []string{"-trusted-proxy", "10.0.0.0/99"}},
		{"bad prefix", append([]string{"gateway", "--prefix", "ops"}, up...), nil, []string{"--prefix", `"ops"`}},
		{"bad public url", append([]string{"gateway", "--public-url", "app.example"}, up...), nil, []string{"--public-url"}},
		{"negative concurrency", append([]string{"gateway", "--concurrency", "-1"}, up...), nil, []string{"--concurrency", "negative"}},
		{"negative heartbeat", []string{"worker", "--heartbeat", "-1s", "--upstream", "http://127.0.0.1:3000"}, nil, []string{"--heartbeat", "negative"}},
		{"unknown owner mode", append([]string{"gateway", "--owner", "session"}, up...), nil, []string{"--owner", `"session"`, "unknown mode"}},
		{"owner without name", append([]string{"gateway", "--owner", "cookie:"}, up...), nil, []string{"--owner", "empty NAME"}},
		{"owner relative path", append([]string{"gateway", "--owner", "upstream:whoami"}, up...), nil, []string{"--owner", `"/"`}},
		{"short key", append([]string{"gateway", "--key", "abcd"}, up...), nil, []string{"-key", "64 hex digits"}},
		{"bad key in environment", append([]string{"gateway"}, up...), map[string]string{"ASYNCREPLY_KEY": "not a key"}, []string{"key", "64 hex digits"}},
		{"bad owner in environment", append([]string{"gateway"}, up...), map[string]string{"ASYNCREPLY_OWNER": "header:"}, []string{"--owner", "empty NAME"}},
		{"malformed backend", append([]string{"gateway", "--backend", "nosuch"}, up...), nil, []string{"--backend", "nosuch"}},
		{"bad environment", []string{"gateway"}, map[string]string{"ASYNCREPLY_TIMEOUT": "forever"}, []string{"ASYNCREPLY_TIMEOUT", "--timeout", "forever"}},
		{"stray argument", append([]string{"gateway", "extra"}, up...), nil, []string{"extra"}},
		{"unknown command", []string{"gatway"}, nil, []string{"gatway"}},
		{"migrate malformed backend", []string{"migrate", "--backend", "mysql://x"}, nil, []string{"--backend", "mysql"}},
		{"negative read timeout", append([]string{"gateway", "--read-timeout", "-1s"}, up...), nil, []string{"--read-timeout", "negative"}},
		{"negative idle timeout in the demo", []string{"demo", "--idle-timeout", "-1s"}, nil, []string{"--idle-timeout", "negative"}},
		{"inline and accept-only", append([]string{"gateway", "--inline", "--accept-only"}, up...), nil, []string{"--accept-only", "Inline"}},
		{"accept-only in memory", append([]string{"gateway", "--accept-only", "--backend", "memory:"}, up...), nil, []string{"--accept-only", "in-memory"}},
		{"negative max watches", append([]string{"gateway", "--max-watches", "-1"}, up...), nil, []string{"--max-watches", "negative"}},
		{"several at once", []string{"gateway", "--upstream", "localhost:3000", "--prefix", "ops", "--owner", "cookie:"}, nil, []string{"--upstream", "--prefix", "--owner"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr strings.Builder
			code := Run(t.Context(), tc.args, env(tc.vars), &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr: %s", code, stderr.String())
			}
			for _, want := range tc.want {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr %q does not mention %q", stderr.String(), want)
				}
			}
		})
	}
}

// lines is an io.Writer that hands each complete line to a channel.
type lines struct {
	mu      sync.Mutex
	partial string
	c       chan string
}

func newLines() *lines { return &lines{c: make(chan string, 1000)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial += string(p)
	for {
		line, rest, ok := strings.Cut(l.partial, "\n")
		if !ok {
			return len(p), nil
		}
		l.partial = rest
		select {
		case l.c <- line:
		default: // nobody is reading any more
		}
	}
}

// waitFor returns the first line matching re.
func (l *lines) waitFor(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line := <-l.c:
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-timeout:
			t.Fatalf("no line matching %s", re)
		}
	}
}

func TestGatewayWarnsAboutUnreachableUpstreamAndShutsDown(t *testing.T) {
	t.Parallel()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	ctx, cancel := context.WithCancel(t.Context())
	stderr := newLines()
	exited := make(chan int, 1)
	go func() {
		exited <- Run(ctx, []string{"gateway", "--listen", "127.0.0.1:0", "--backend", "memory:", "--upstream", dead.URL, "--async", "GET /reports/{id}"}, env(nil), io.Discard, stderr)
	}()
	stderr.waitFor(t, regexp.MustCompile(`level=WARN .*upstream does not answer`))
	addr := stderr.waitFor(t, regexp.MustCompile(`listening" url=(http://\S+)`))[1]

	resp, err := http.Get(addr + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("pass-through to a dead upstream: %d, want 502", resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if code := <-exited; code != 0 {
		t.Errorf("exit %d after shutdown, want 0", code)
	}
}

func TestDemoServesTheSlowReportAsynchronously(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	out, stdout := io.Pipe()
	exited := make(chan int, 1)
	go func() {
		exited <- Run(ctx, []string{"demo", "--listen", "127.0.0.1:0", "--delay", "0s"}, env(nil), stdout, io.Discard)
		stdout.Close()
	}()
	var base string
	scanner := bufio.NewScanner(out)
	for base == "" && scanner.Scan() {
		if m := regexp.MustCompile(`Open (http://\S+)/reports/42`).FindStringSubmatch(scanner.Text()); m != nil {
			base = m[1]
		}
	}
	go io.Copy(io.Discard, out)
	if base == "" {
		t.Fatal("the demo printed no URL")
	}
	client := &http.Client{Transport: &http.Transport{}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.Transport.(*http.Transport).CloseIdleConnections()

	resp, err := client.Get(base + "/reports/42")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("GET /reports/42: %d, want 202", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, resp.Header.Get("Location"), nil)
	req.Header.Set("Prefer", "wait=20")
	client.CheckRedirect = nil // follow the 303 to the report
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "<h1>Report 42</h1>") {
		t.Errorf("the report: %d %s", resp.StatusCode, body)
	}
	client.Transport.(*http.Transport).CloseIdleConnections()
	cancel()
	if code := <-exited; code != 0 {
		t.Errorf("exit %d after shutdown, want 0", code)
	}
}

func TestMigrateSaysWhetherTheBackendHasTables(t *testing.T) {
	t.Parallel()
	for backend, want := range map[string]string{
		"memory:": "has no tables",
		"sqlite://" + filepath.Join(t.TempDir(), "asyncreply.db"): "tables are up to date",
	} {
		var stdout, stderr strings.Builder
		if code := Run(t.Context(), []string{"migrate", "--backend", backend}, env(nil), &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), want) {
			t.Errorf("migrate --backend %s: exit %d, stdout %q, stderr %q; want it to say %q", backend, code, stdout.String(), stderr.String(), want)
		}
	}
}
