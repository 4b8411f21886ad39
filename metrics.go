package asyncreply

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/asyncreply/asyncreply/backend"
)

// metrics are the Middleware's Prometheus collectors; MetricsHandler
// documents each.
type metrics struct {
	accepted      *prometheus.CounterVec
	completed     *prometheus.CounterVec
	queueWait     prometheus.Histogram
	runDuration   prometheus.Histogram
	totalDuration prometheus.Histogram
	replays       prometheus.Gauge
	watchesOpen   prometheus.Gauge
	backendErrors *prometheus.CounterVec
}

// durationBuckets span a fast handler (10 ms) to the default Timeout
// (10 minutes): operations are deferred because they are slow.
var durationBuckets = []float64{0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// newMetrics creates the Middleware's metrics and registers them with reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	histogram := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: durationBuckets})
	}
	mt := &metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "asyncreply_operations_accepted_total",
			Help: "Requests deferred to an operation, by route pattern, result (accepted, refused) and HTTP status answered.",
		}, []string{"route", "result", "code"}),
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "asyncreply_operations_completed_total",
			Help: "Operations finished by this process, by status (Succeeded, Failed) and the failure's HTTP status.",
		}, []string{"status", "code"}),
		queueWait:     histogram("asyncreply_operation_queue_wait_seconds", "Time from an operation's creation to its first execution."),
		runDuration:   histogram("asyncreply_operation_run_duration_seconds", "Time from an execution's start to its outcome being stored."),
		totalDuration: histogram("asyncreply_operation_duration_seconds", "Time from an operation's creation to its outcome being stored."),
		replays: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "asyncreply_replays_in_flight",
			Help: "Recorded requests being replayed through the application now.",
		}),
		watchesOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "asyncreply_watches_open",
			Help: "Long-polls and event streams open now.",
		}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "asyncreply_backend_errors_total",
			Help: "Calls to the backend that failed, by method.",
		}, []string{"method"}),
	}
	for _, c := range []prometheus.Collector{mt.accepted, mt.completed, mt.queueWait, mt.runDuration, mt.totalDuration, mt.replays, mt.watchesOpen, mt.backendErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return mt, nil
}

// observeSubmit counts a deferred request by the route it was reached
// through and the status it was answered with.
func (mt *metrics) observeSubmit(route string, code int) {
	result := "accepted"
	if code >= http.StatusBadRequest {
		result = "refused"
	}
	mt.accepted.WithLabelValues(route, result, strconv.Itoa(code)).Inc()
}

// observeStarted measures an operation's wait in the queue, on its first
// attempt only: a retry's wait includes the failed attempt's run.
func (mt *metrics) observeStarted(op *backend.Operation, now time.Time) {
	if op.Attempt == 1 {
		mt.queueWait.Observe(now.Sub(op.CreatedAt).Seconds())
	}
}

// observeCompleted counts an outcome this process stored. op is the
// operation as its execution started (MarkRunning's answer).
func (mt *metrics) observeCompleted(op *backend.Operation, outcome backend.Outcome) {
	code := ""
	if outcome.Failure != nil {
		code = strconv.Itoa(outcome.Failure.Status)
	}
	mt.completed.WithLabelValues(string(outcome.Status), code).Inc()
	mt.runDuration.Observe(outcome.At.Sub(op.UpdatedAt).Seconds())
	mt.totalDuration.Observe(outcome.At.Sub(op.CreatedAt).Seconds())
}

// MetricsHandler serves the Middleware's metrics in the Prometheus text
// format, for GET /metrics on an operator listener: never mount it on the
// listener clients reach. It serves Config.Registerer when that is also a
// prometheus.Gatherer (a *prometheus.Registry is both), and the private
// registry when Config.Registerer is nil; a Registerer that cannot be
// gathered is served by whoever created it, and MetricsHandler answers 404.
//
// The metrics count what this process sees: several processes sharing a
// backend each count their own, and Prometheus sums them.
//
//	asyncreply_operations_accepted_total{route, result, code}
//	    Requests deferred to an operation, by the route pattern the
//	    handler was reached through (r.Pattern at Defer, "" without one),
//	    by result ("accepted" when answered with an operation, also one an
//	    Idempotency-Key found again; "refused" otherwise) and by the HTTP
//	    status answered (202, or 200/303 when the answer was ready within
//	    the wait; 413, 429, 503… for refusals).
//	asyncreply_operations_completed_total{status, code}
//	    Operations finished by this process, by status ("Succeeded",
//	    "Failed") and, for Failed, the failure's HTTP status ("504" for a
//	    timeout; "" for Succeeded). An attempt that lost the race to store
//	    its outcome is not counted.
//	asyncreply_operation_queue_wait_seconds
//	    Histogram: from an operation's creation to its first execution.
//	asyncreply_operation_run_duration_seconds
//	    Histogram: from an execution's start to its outcome being stored.
//	asyncreply_operation_duration_seconds
//	    Histogram: from creation to the outcome being stored (end to end).
//	asyncreply_replays_in_flight
//	    Gauge: recorded requests being replayed through the application now.
//	asyncreply_watches_open
//	    Gauge: long-polls and event streams open now (Config.MaxWatches
//	    bounds it).
//	asyncreply_backend_errors_total{method}
//	    Calls to the backend that failed, by method ("Create", "Get"…):
//	    the store unreachable or too slow. The answers a backend gives in
//	    the ordinary course — not found, already finished, canceled, queue
//	    full — are not errors and are not counted.
func (m *Middleware) MetricsHandler() http.Handler {
	g, ok := m.cfg.Registerer.(prometheus.Gatherer)
	if !ok {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeProblem(w, http.StatusNotFound, "No metrics here",
				"The metrics are registered with a Registerer that this handler cannot gather.")
		})
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// submitCounter counts a submit's answer in
// asyncreply_operations_accepted_total as its status is written: before
// the client can read it, so that a scrape after the answer sees it. It
// keeps Unwrap, so that http.ResponseController reaches the writer
// underneath.
type submitCounter struct {
	http.ResponseWriter
	metrics *metrics
	route   string
	counted bool
}

func (w *submitCounter) WriteHeader(code int) {
	w.count(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *submitCounter) Write(p []byte) (int, error) {
	w.count(http.StatusOK)
	return w.ResponseWriter.Write(p)
}

func (w *submitCounter) count(code int) {
	if !w.counted && code >= http.StatusOK {
		w.counted = true
		w.metrics.observeSubmit(w.route, code)
	}
}

func (w *submitCounter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBackend is the Middleware's backend, counting its failed calls by
// method (asyncreply_backend_errors_total). Methods the contract gains
// later pass through uncounted until they are added here.
type countingBackend struct {
	backend.Backend
	errors *prometheus.CounterVec
}

// count counts err unless it is one of the contract's ordinary answers, or
// the caller's own cancellation.
func (b countingBackend) count(method string, err error) {
	if err == nil {
		return
	}
	for _, answer := range []error{backend.ErrNotFound, backend.ErrFinished, backend.ErrCanceled,
		backend.ErrShutdown, backend.ErrQueueFull, backend.ErrOwnerQueueFull, context.Canceled} {
		if errors.Is(err, answer) {
			return
		}
	}
	b.errors.WithLabelValues(method).Inc()
}

// Local forwards backend.Local, which embedding would hide.
func (b countingBackend) Local() bool { return backend.IsLocal(b.Backend) }

func (b countingBackend) Create(ctx context.Context, op *backend.Operation) (*backend.Operation, bool, error) {
	stored, created, err := b.Backend.Create(ctx, op)
	b.count("Create", err)
	return stored, created, err
}

func (b countingBackend) Get(ctx context.Context, id string) (*backend.Operation, error) {
	op, err := b.Backend.Get(ctx, id)
	b.count("Get", err)
	return op, err
}

func (b countingBackend) MarkRunning(ctx context.Context, id string, at time.Time) (*backend.Operation, error) {
	op, err := b.Backend.MarkRunning(ctx, id, at)
	b.count("MarkRunning", err)
	return op, err
}

func (b countingBackend) SetProgress(ctx context.Context, id string, progress backend.Progress, at time.Time) error {
	err := b.Backend.SetProgress(ctx, id, progress, at)
	b.count("SetProgress", err)
	return err
}

func (b countingBackend) Complete(ctx context.Context, id string, outcome backend.Outcome) (bool, error) {
	won, err := b.Backend.Complete(ctx, id, outcome)
	b.count("Complete", err)
	return won, err
}

func (b countingBackend) Cancel(ctx context.Context, id string, at time.Time) error {
	err := b.Backend.Cancel(ctx, id, at)
	b.count("Cancel", err)
	return err
}

func (b countingBackend) MarkCollected(ctx context.Context, id string, at time.Time) (bool, error) {
	first, err := b.Backend.MarkCollected(ctx, id, at)
	b.count("MarkCollected", err)
	return first, err
}

func (b countingBackend) Sweep(ctx context.Context, now time.Time) (int, error) {
	n, err := b.Backend.Sweep(ctx, now)
	b.count("Sweep", err)
	return n, err
}

func (b countingBackend) Watch(ctx context.Context, id string) (<-chan struct{}, func(), error) {
	changes, stop, err := b.Backend.Watch(ctx, id)
	b.count("Watch", err)
	return changes, stop, err
}

func (b countingBackend) Start(ctx context.Context, execute backend.ExecuteFunc) error {
	err := b.Backend.Start(ctx, execute)
	b.count("Start", err)
	return err
}

func (b countingBackend) Stop(ctx context.Context) error {
	err := b.Backend.Stop(ctx)
	b.count("Stop", err)
	return err
}
