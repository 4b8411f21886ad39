package asyncreply_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// scrape reads h's metrics as Prometheus parses them.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", rec.Code, rec.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parsing the metrics: %v", err)
	}
	return families
}

// metricValue is the value of the counter or gauge name with exactly the
// labels given as name/value pairs (a histogram's sample count), 0 when
// no such series was exported.
func metricValue(families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	family := families[name]
	if family == nil {
		return 0
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range family.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

// The metrics count what the test did: operations accepted and refused by
// route and status, completed by status and failure, their durations,
// replays and watches open going up and back down.
func TestMetrics(t *testing.T) {
	t.Parallel()
	g := newGate(text("held"))
	defer g.release.fire()
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(text("report")))
	mux.Handle("POST /upload", asyncreply.Async(text("uploaded")))
	mux.Handle("GET /held/{id}", asyncreply.Async(g))
	// It outlasts its timeout: it returns only when its context ends.
	mux.Handle("GET /slow", asyncreply.AsyncWith(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}), asyncreply.RouteOptions{Timeout: time.Millisecond}))
	// One worker and one place in the queue: a held replay and one
	// operation waiting fill it. One worker also orders the counts: an
	// operation starts once the one before has been counted completed.
	be := memory.New(memory.Config{Concurrency: 1, MaxQueued: 1})
	b := setup(t, asyncreply.Config{Backend: be, MaxRequestBytes: 4}, mux)
	metrics := b.ar.MetricsHandler()

	const reports = 3
	for i := range reports {
		_, monitor := b.submit(t, http.MethodGet, "/reports/"+string(rune('1'+i)), "")
		if r := b.finish(t, monitor); r.code != http.StatusSeeOther {
			t.Fatalf("report %d = %s, want 303", i, r)
		}
	}
	_, slow := b.submit(t, http.MethodGet, "/slow", "")
	if r := b.finish(t, slow); r.code != http.StatusGatewayTimeout {
		t.Fatalf("slow = %s, want 504", r)
	}
	if r := b.do(t, http.MethodPost, "/upload", "too long"); r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("upload = %s, want 413", r)
	}

	_, running := b.submit(t, http.MethodGet, "/held/1", "")
	testwait.Recv(t, g.started, "the held replay to start")
	_, queued := b.submit(t, http.MethodGet, "/held/2", "")
	if r := b.do(t, http.MethodGet, "/held/3", ""); r.code != http.StatusServiceUnavailable {
		t.Fatalf("past the queue's bound = %s, want 503", r)
	}
	stream := b.openEvents(t, queued)
	stream.nextStatus(t)

	during := scrape(t, metrics)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"asyncreply_operations_accepted_total", []string{"route", "GET /reports/{id}", "result", "accepted", "code", "202"}, reports},
		{"asyncreply_operations_accepted_total", []string{"route", "GET /slow", "result", "accepted", "code", "202"}, 1},
		{"asyncreply_operations_accepted_total", []string{"route", "POST /upload", "result", "refused", "code", "413"}, 1},
		{"asyncreply_operations_accepted_total", []string{"route", "GET /held/{id}", "result", "accepted", "code", "202"}, 2},
		{"asyncreply_operations_accepted_total", []string{"route", "GET /held/{id}", "result", "refused", "code", "503"}, 1},
		{"asyncreply_operations_completed_total", []string{"status", "Succeeded", "code", ""}, reports},
		{"asyncreply_operations_completed_total", []string{"status", "Failed", "code", "504"}, 1},
		{"asyncreply_operation_queue_wait_seconds", nil, reports + 2}, // the held one has started
		{"asyncreply_operation_run_duration_seconds", nil, reports + 1},
		{"asyncreply_operation_duration_seconds", nil, reports + 1},
		{"asyncreply_replays_in_flight", nil, 1},
		{"asyncreply_watches_open", nil, 1},
	} {
		if got := metricValue(during, c.name, c.labels...); got != c.want {
			t.Errorf("while held: %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	g.release.fire()
	for {
		if _, err := stream.next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("event stream: %v", err)
		}
	}
	for _, monitor := range []string{running, queued} {
		if r := b.finish(t, monitor); r.code != http.StatusSeeOther {
			t.Fatalf("%s = %s, want 303", monitor, r)
		}
	}
	// An outcome is counted once stored, a moment after a poll may see it;
	// Shutdown waits for the worker to return.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := b.shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	after := scrape(t, metrics)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"asyncreply_operations_completed_total", []string{"status", "Succeeded", "code", ""}, reports + 2},
		{"asyncreply_operations_completed_total", []string{"status", "Failed", "code", "504"}, 1},
		{"asyncreply_operation_duration_seconds", nil, reports + 3},
		{"asyncreply_replays_in_flight", nil, 0},
		{"asyncreply_watches_open", nil, 0},
	} {
		if got := metricValue(after, c.name, c.labels...); got != c.want {
			t.Errorf("after: %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// Each Middleware has a registry of its own unless told otherwise, so that
// two in one process do not collide; two given the same Registerer do, and
// the second is refused with an error naming the field.
func TestMetricsRegisterer(t *testing.T) {
	t.Parallel()
	for range 2 {
		b := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(text("report"))))
		b.submit(t, http.MethodGet, "/reports/1", "")
		if got := metricValue(scrape(t, b.ar.MetricsHandler()), "asyncreply_operations_accepted_total",
			"route", "GET /reports/{id}", "result", "accepted", "code", "202"); got != 1 {
			t.Errorf("accepted = %v, want 1: the Middlewares share a registry", got)
		}
	}

	reg := prometheus.NewRegistry()
	b := setup(t, asyncreply.Config{Registerer: reg}, route("GET /reports/{id}", asyncreply.Async(text("report"))))
	b.submit(t, http.MethodGet, "/reports/1", "")
	if _, ok := scrape(t, b.ar.MetricsHandler())["asyncreply_operations_accepted_total"]; !ok {
		t.Error("MetricsHandler does not serve the given registry")
	}
	_, err := asyncreply.New(asyncreply.Config{Registerer: reg, Logger: discardLogger})
	var ce *asyncreply.ConfigError
	if !errors.As(err, &ce) || ce.Field != "Registerer" || !strings.Contains(err.Error(), "registering metrics") {
		t.Errorf("New with a Registerer already used = %v, want a ConfigError for Registerer", err)
	}
}

// A store that cannot be reached is counted by method; the answers a
// backend gives in the ordinary course (an unknown operation) are not.
func TestMetricsBackendErrors(t *testing.T) {
	t.Parallel()
	store := &flakyBackend{Backend: memory.New(memory.Config{})}
	b := setup(t, asyncreply.Config{Backend: store}, route("GET /reports/{id}", asyncreply.Async(text("report"))))
	_, monitor := b.submit(t, http.MethodGet, "/reports/1", "")
	b.finish(t, monitor)
	if r := b.do(t, http.MethodGet, asyncreply.DefaultPrefix+"AAAAAAAAAAAAAAAAAAAAAA", ""); r.code != http.StatusNotFound {
		t.Fatalf("unknown operation = %s, want 404", r)
	}

	store.down.Store(true)
	if r := b.do(t, http.MethodGet, "/reports/2", ""); r.code != http.StatusServiceUnavailable {
		t.Fatalf("submit with the store down = %s, want 503", r)
	}
	if r := b.do(t, http.MethodGet, monitor, ""); r.code != http.StatusServiceUnavailable {
		t.Fatalf("poll with the store down = %s, want 503", r)
	}
	families := scrape(t, b.ar.MetricsHandler())
	for _, c := range []struct {
		method string
		want   float64
	}{{"Create", 1}, {"Get", 1}, {"MarkRunning", 0}} {
		if got := metricValue(families, "asyncreply_backend_errors_total", "method", c.method); got != c.want {
			t.Errorf("asyncreply_backend_errors_total{method=%q} = %v, want %v", c.method, got, c.want)
		}
	}
	if got := metricValue(families, "asyncreply_operations_accepted_total", "route", "GET /reports/{id}", "result", "refused", "code", "503"); got != 1 {
		t.Errorf("refused 503 = %v, want 1", got)
	}
}
