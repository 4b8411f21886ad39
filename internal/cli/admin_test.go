package cli

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// --admin-listen serves GET /metrics on a listener of its own, never on the
// clients' one, and --admin-token guards it with a bearer token.
func TestAdminListenServesMetricsApart(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "report")
	}))
	t.Cleanup(upstream.Close)
	var admin string
	s := startCommand(t, []string{"gateway", "--backend", "memory:", "--upstream", upstream.URL, "--async", "GET /reports/{id}",
		"--admin-listen", "127.0.0.1:0", "--admin-token", "s3cret"}, func(_, stderr *lines) string {
		admin = stderr.waitFor(t, regexp.MustCompile(`admin listening" url=(http://\S+)/ `))[1]
		return stderr.waitFor(t, regexp.MustCompile(`listening" url=(http://\S+)`))[1]
	})
	if admin == s.base {
		t.Fatalf("the admin listener is the clients' listener, %s", admin)
	}

	get := func(url string, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	if code, body := get(s.base+"/reports/1", "Prefer", "respond-async"); code != http.StatusAccepted {
		t.Fatalf("GET /reports/1 = %d %s, want 202", code, body)
	}
	if code, body := get(s.base+"/metrics", "Authorization", "Bearer s3cret"); strings.Contains(body, "asyncreply_") {
		t.Errorf("the clients' listener serves the metrics: %d %s", code, body)
	}
	for _, auth := range []string{"", "Bearer wrong", "s3cret"} {
		if code, _ := get(admin+"/metrics", "Authorization", auth); code != http.StatusUnauthorized {
			t.Errorf("GET /metrics with Authorization %q = %d, want 401", auth, code)
		}
	}

	code, body := get(admin+"/metrics", "Authorization", "Bearer s3cret")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics with the token = %d %s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the metrics: %v", err)
	}
	var accepted float64
	for _, m := range families["asyncreply_operations_accepted_total"].GetMetric() {
		accepted += m.GetCounter().GetValue()
	}
	if accepted != 1 {
		t.Errorf("asyncreply_operations_accepted_total = %v, want 1", accepted)
	}
	if got := families["asyncreply_operations"]; got == nil {
		t.Error("no asyncreply_operations gauge of the memory backend's operations")
	}
}

// The token guards the dashboard and its API as it guards /metrics: a
// script sends it as a bearer token; a browser visits /?token= once and
// is redirected to the page with a cookie that stands for it, which no
// cross-origin post can use.
func TestAdminTokenGuardsTheDashboard(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "report")
	}))
	t.Cleanup(upstream.Close)
	var admin string
	startCommand(t, []string{"gateway", "--backend", "memory:", "--upstream", upstream.URL, "--async", "GET /reports/{id}",
		"--admin-listen", "127.0.0.1:0", "--admin-token", "s3cret"}, func(_, stderr *lines) string {
		admin = stderr.waitFor(t, regexp.MustCompile(`admin listening" url=(http://\S+)/ `))[1]
		return stderr.waitFor(t, regexp.MustCompile(`listening" url=(http://\S+)`))[1]
	})
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path string, header ...string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, admin+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	for _, path := range []string{"/", "/api/summary", "/api/operations", "/metrics", "/?token=wrong"} {
		if resp := do(http.MethodGet, path); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token = %d, want 401", path, resp.StatusCode)
		}
	}
	if resp := do(http.MethodGet, "/", "Cookie", adminCookie+"=s3cret"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET / with the token itself as the cookie = %d, want 401", resp.StatusCode)
	}
	for _, path := range []string{"/", "/api/summary", "/api/operations"} {
		if resp := do(http.MethodGet, path, "Authorization", "Bearer s3cret"); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the bearer token = %d, want 200", path, resp.StatusCode)
		}
	}

	resp := do(http.MethodGet, "/?token=s3cret")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("GET /?token= = %d Location %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A path of leading slashes stays on this host.
	if loc := do(http.MethodGet, "//evil.example/?token=s3cret").Header.Get("Location"); strings.HasPrefix(loc, "//") || !strings.HasPrefix(loc, "/") {
		t.Errorf("GET //evil.example/?token= redirects to %q, want a path on this host", loc)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 || cookies[0].Name != adminCookie || !cookies[0].HttpOnly ||
		cookies[0].SameSite != http.SameSiteStrictMode || strings.Contains(cookies[0].Value, "s3cret") {
		t.Fatalf("cookies = %+v, want one HttpOnly, SameSite=Strict %s without the token in it", cookies, adminCookie)
	}
	cookie := adminCookie + "=" + cookies[0].Value
	for _, path := range []string{"/", "/api/summary", "/metrics"} {
		if resp := do(http.MethodGet, path, "Cookie", cookie); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the cookie = %d, want 200", path, resp.StatusCode)
		}
	}
	resp = do(http.MethodPost, "/api/operations/AAAAAAAAAAAAAAAAAAAAAA/cancel", "Cookie", cookie,
		"Origin", "http://evil.example", "Content-Type", "application/x-www-form-urlencoded")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cross-origin post with the cookie = %d, want 403", resp.StatusCode)
	}
	resp = do(http.MethodPost, "/api/operations/AAAAAAAAAAAAAAAAAAAAAA/cancel", "Cookie", cookie, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("a same-origin cancel of an unknown operation = %d, want 404", resp.StatusCode)
	}
}

// The admin token is read from ASYNCREPLY_ADMIN_TOKEN as every flag is,
// by the gateway and the worker alike.
func TestAdminFlagsFromTheEnvironment(t *testing.T) {
	t.Parallel()
	vars := env(map[string]string{"ASYNCREPLY_UPSTREAM": "http://127.0.0.1:3000", "ASYNCREPLY_ADMIN_LISTEN": "127.0.0.1:9090", "ASYNCREPLY_ADMIN_TOKEN": "s3cret"})
	for name, parse := range map[string]func([]string, func(string) string, io.Writer) (*gatewayOptions, error){"gateway": parseGateway, "worker": parseWorker} {
		o, err := parse(nil, vars, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if o.adminListen != "127.0.0.1:9090" || o.adminToken != "s3cret" {
			t.Errorf("%s: --admin-listen %q, --admin-token %q from the environment", name, o.adminListen, o.adminToken)
		}
	}
}
