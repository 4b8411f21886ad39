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
		admin = stderr.waitFor(t, regexp.MustCompile(`admin listening" url=(http://\S+)/metrics`))[1]
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
