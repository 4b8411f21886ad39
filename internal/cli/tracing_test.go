package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// Without an exporter or an endpoint in the environment no SDK is set up,
// and the gateway is given no provider: the library's default, a no-op
// until a program sets the global one.
func TestNoTelemetryWithoutOTELVariables(t *testing.T) {
	t.Parallel()
	for name, vars := range map[string]map[string]string{
		"unset":         nil,
		"service name":  {"OTEL_SERVICE_NAME": "orders"},
		"SDK disabled":  {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
		"exporter none": {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
	} {
		tel, err := startTelemetry(t.Context(), env(vars))
		if err != nil || tel != nil {
			t.Errorf("%s: telemetry %+v, %v; want none", name, tel, err)
		}
		o, err := parseGateway([]string{"--upstream", "http://127.0.0.1:3000", "--backend", "memory:"}, env(vars), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		o.telemetry = tel
		if cfg, err := gatewayConfig(o, nil); err != nil || cfg.TracerProvider != nil || cfg.Propagator != nil {
			t.Errorf("%s: gateway.Config TracerProvider %v, Propagator %v, %v; want none", name, cfg.TracerProvider, cfg.Propagator, err)
		}
	}
}

func TestBadOTELVariablesExit2(t *testing.T) {
	t.Parallel()
	for _, vars := range []map[string]string{
		{"OTEL_TRACES_EXPORTER": "zipkin"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_PROPAGATORS": "b3"},
	} {
		var stderr strings.Builder
		code := Run(t.Context(), []string{"gateway", "--upstream", "http://127.0.0.1:3000", "--backend", "memory:"}, env(vars), io.Discard, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), "OTEL_") {
			t.Errorf("%v: exit %d, %q; want 2 naming the variable", vars, code, stderr.String())
		}
	}
}

// With OTEL_EXPORTER_OTLP_ENDPOINT the gateway's spans are exported there
// over OTLP/HTTP, the last of them when it shuts down.
func TestGatewayExportsSpansToTheOTLPEndpoint(t *testing.T) {
	t.Parallel()
	exported := make(chan *coltracepb.ExportTraceServiceRequest, 100)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("the collector got %s %s (%s), want POST /v1/traces of protobuf", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		req := new(coltracepb.ExportTraceServiceRequest)
		if err := proto.Unmarshal(body, req); err != nil {
			t.Errorf("the collector got an undecodable export: %v", err)
		}
		exported <- req
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "exported") }))
	defer upstream.Close()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stderr := newLines()
	exited := make(chan int, 1)
	vars := env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL, "OTEL_SERVICE_NAME": "exports-gateway"})
	go func() {
		exited <- Run(ctx, []string{"gateway", "--listen", "127.0.0.1:0", "--backend", "memory:", "--upstream", upstream.URL, "--async", "POST /exports"}, vars, io.Discard, stderr)
	}()
	base := stderr.waitFor(t, regexp.MustCompile(`listening" url=(http://\S+)`))[1]
	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Post(base+"/exports", "text/plain", strings.NewReader("all"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, resp.Header.Get("Location"), nil)
	req.Header.Set("Prefer", "wait=20")
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "exported" {
		t.Fatalf("the operation's response: %d %q", resp.StatusCode, body)
	}
	client.Transport.(*http.Transport).CloseIdleConnections()
	cancel()
	if code := testwait.Recv(t, exited, "the gateway's exit"); code != 0 {
		t.Fatalf("exit %d after shutdown, want 0", code)
	}

	names := map[string]bool{}
	for len(exported) > 0 {
		for _, rs := range (<-exported).GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" && kv.GetValue().GetStringValue() != "exports-gateway" {
					t.Errorf("service.name = %q, want OTEL_SERVICE_NAME's", kv.GetValue().GetStringValue())
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					names[s.GetName()] = true
				}
			}
		}
	}
	for _, want := range []string{asyncreply.SubmitSpanName, asyncreply.ReplaySpanName, asyncreply.CollectSpanName} {
		if !names[want] {
			t.Errorf("no %s span arrived at the collector; got %v", want, names)
		}
	}
}
