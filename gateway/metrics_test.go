package gateway_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/asyncreply/asyncreply/gateway"
)

// The gateway's metrics count an --async route's operations by its
// pattern, as the library's do for a ServeMux route, and an operation the
// upstream deferred on a route of its own without one.
func TestMetricsHandler(t *testing.T) {
	t.Parallel()
	upstream := http.NewServeMux()
	upstream.HandleFunc("GET /reports/{id}", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("report")) })
	upstream.HandleFunc("GET /exports/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(gateway.DeferrableHeader) == "1" {
			w.Header().Set(gateway.DeferHeader, "1")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.Write([]byte("export"))
	})
	b := setup(t, upstream, gateway.Config{Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})
	for _, target := range []string{"/reports/1", "/reports/2", "/exports/1"} {
		resp, body := b.get(t, b.gateway.URL+target)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("GET %s = %d %s, want 202", target, resp.StatusCode, body)
		}
		b.finalResponse(t, resp.Header.Get("Location"))
	}

	rec := httptest.NewRecorder()
	b.gw.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parsing the metrics: %v", err)
	}
	accepted := map[string]float64{}
	for _, m := range families["asyncreply_operations_accepted_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" {
				accepted[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	if accepted["GET /reports/{id}"] != 2 || accepted[""] != 1 || len(accepted) != 2 {
		t.Errorf("accepted by route = %v, want GET /reports/{id}: 2 and the upstream's deferral (no route): 1", accepted)
	}
}
