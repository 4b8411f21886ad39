package asyncreply

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
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

	// recent counts the last minute's submits and completions for the
	// dashboard's rates (recentCounter); now is the Middleware's clock.
	recent struct{ accepted, succeeded, failed recentCounter }
	now    func() time.Time
	// stored counts the backend's operations by status, when it lists
	// them (observeStore); nil otherwise.
	stored *statusCounts
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
	mt.now = time.Now
	return mt, nil
}

// observeSubmit counts a deferred request by the route it was reached
// through and the status it was answered with.
func (mt *metrics) observeSubmit(route string, code int) {
	result := "accepted"
	if code >= http.StatusBadRequest {
		result = "refused"
	} else {
		mt.recent.accepted.add(mt.now())
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
	if outcome.Status == backend.Succeeded {
		mt.recent.succeeded.add(outcome.At)
	} else {
		mt.recent.failed.add(outcome.At)
	}
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
//	asyncreply_operations{status}
//	    Gauge: the operations the backend keeps, by status ("NotStarted"
//	    — the queue —, "Running", "Succeeded", "Failed"), expired and
//	    canceled ones left out; only with a backend that lists
//	    (backend.Lister). It is the whole store, not this process's
//	    share: processes sharing a backend export the same values, so
//	    aggregate them with max, not sum. Counting is a scan of the store,
//	    so it runs only when scraped or when the dashboard asks, and its
//	    answer is kept for StatusCountsTTL.
//	asyncreply_backend_errors_total{method}
//	    Calls to the backend that failed, by method ("Create", "Get"…):
//	    the store unreachable or too slow. The answers a backend gives in
//	    the ordinary course — not found, already finished, canceled, queue
//	    full — are not errors and are not counted. "CountByStatus" counts
//	    the failures of asyncreply_operations' count.
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

// StatusCountsTTL is how long a count of the backend's operations by
// status (asyncreply_operations, the dashboard's counts) is reused before
// the store is counted again: counting is a scan of the store, which a
// scrape every few seconds and several dashboards open should not repeat
// each time.
const StatusCountsTTL = 5 * time.Second

// observeStore makes the metrics count the operations lister keeps by
// status (asyncreply_operations), when it is not nil, and take the time
// from now.
func (mt *metrics) observeStore(reg prometheus.Registerer, lister backend.Lister, now func() time.Time) error {
	mt.now = now
	if lister == nil {
		return nil
	}
	mt.stored = &statusCounts{
		lister: lister,
		now:    now,
		errors: mt.backendErrors.WithLabelValues("CountByStatus"),
		desc: prometheus.NewDesc("asyncreply_operations",
			"Operations the backend keeps, by status; the whole store, counted at most every 5 s.", []string{"status"}, nil),
	}
	if err := reg.Register(mt.stored); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	return nil
}

// statusCounts counts the backend's operations by status, for
// asyncreply_operations and the dashboard, reusing a count for
// StatusCountsTTL. It is a prometheus.Collector.
type statusCounts struct {
	lister backend.Lister
	now    func() time.Time
	errors prometheus.Counter
	desc   *prometheus.Desc

	// mu is held while counting, so that concurrent scrapes wait for one
	// count instead of each scanning the store.
	mu        sync.Mutex
	counts    map[backend.Status]int
	countedAt time.Time
}

// get returns the counts, counting again when the last count is older
// than StatusCountsTTL, and when they were counted.
func (s *statusCounts) get(ctx context.Context) (map[backend.Status]int, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.counts != nil && now.Sub(s.countedAt) < StatusCountsTTL {
		return s.counts, s.countedAt, nil
	}
	counts, err := s.lister.CountByStatus(ctx, backend.CountQuery{AnyOwner: true, Now: now})
	if err != nil {
		s.errors.Inc()
		return nil, time.Time{}, fmt.Errorf("counting operations by status: %w", err)
	}
	s.counts, s.countedAt = counts, now
	return counts, now, nil
}

func (s *statusCounts) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

// Collect exports the counts. When the store cannot be counted it exports
// none, rather than failing the scrape of every other metric, and
// asyncreply_backend_errors_total{method="CountByStatus"} says why.
func (s *statusCounts) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	counts, _, err := s.get(ctx)
	if err != nil {
		return
	}
	for _, status := range listedStatuses {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(counts[status]), string(status))
	}
}

// listedStatuses are the statuses a listing counts, in the order an
// operation goes through them.
var listedStatuses = []backend.Status{backend.NotStarted, backend.Running, backend.Succeeded, backend.Failed}

// recentCounter counts events over the last minute, for the dashboard's
// rates: a Prometheus counter holds only its total, and a rate needs two
// readings some time apart, which a dashboard loaded once does not have.
// It keeps one slot per second of the last minute.
type recentCounter struct {
	mu    sync.Mutex
	slots [60]struct {
		second int64 // the Unix second the slot counts
		n      int
	}
}

// recentWindow is the span recentCounter counts over.
const recentWindow = time.Minute

func (c *recentCounter) add(at time.Time) {
	second := at.Unix()
	c.mu.Lock()
	slot := &c.slots[uint64(second)%uint64(len(c.slots))]
	if slot.second != second {
		slot.second, slot.n = second, 0
	}
	slot.n++
	c.mu.Unlock()
}

// count returns the events of the minute up to now.
func (c *recentCounter) count(now time.Time) int {
	newest := now.Unix()
	oldest := newest - int64(len(c.slots)) + 1
	total := 0
	c.mu.Lock()
	for _, slot := range c.slots {
		if slot.second >= oldest && slot.second <= newest {
			total += slot.n
		}
	}
	c.mu.Unlock()
	return total
}
