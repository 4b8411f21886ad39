package asyncreply

import (
	"context"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/problem"
)

// Bounds of the dashboard's lists, so that a store of millions of
// operations makes a page of a known size: the newest of each are shown,
// and GET /api/operations pages through the rest.
const (
	// dashboardInFlight is how many operations waiting or running the
	// dashboard lists.
	dashboardInFlight = 50
	// dashboardFailures is how many recent failures it lists.
	dashboardFailures = 20
)

// dashboardSummary is what the dashboard shows, as GET /api/summary
// serves it and the page renders it.
type dashboardSummary struct {
	GeneratedAt time.Time `json:"generatedAt"`
	// Listing is false when the backend does not list operations: then
	// Counts, InFlight and Failures are empty, and only this process's
	// metrics are shown.
	Listing bool `json:"listing"`
	// Counts are the store's operations by status, counted at CountedAt
	// (at most StatusCountsTTL before GeneratedAt); nil when unavailable.
	Counts    map[backend.Status]int `json:"counts"`
	CountedAt *time.Time             `json:"countedAt,omitempty"`
	// Unavailable says what could not be read from the store, "" when
	// everything was.
	Unavailable string `json:"unavailable,omitempty"`

	Recent    recentRates       `json:"recent"`
	Durations []durationSummary `json:"durations"`

	ReplaysInFlight int `json:"replaysInFlight"`
	WatchesOpen     int `json:"watchesOpen"`

	InFlight []adminOperation `json:"inFlight"`
	Failures []adminOperation `json:"failures"`
}

// recentRates are this process's submits and completions over the last
// WindowSeconds: per minute, since the window is a minute.
type recentRates struct {
	WindowSeconds int `json:"windowSeconds"`
	Accepted      int `json:"accepted"`
	Succeeded     int `json:"succeeded"`
	Failed        int `json:"failed"`
}

// durationSummary summarizes one of the duration histograms since this
// process started: the mean is exact (sum over count); the quantiles are
// estimated from the buckets by linear interpolation, as PromQL's
// histogram_quantile does, so they are only as fine as the buckets
// (durationBuckets).
type durationSummary struct {
	Name   string  `json:"name"`
	Metric string  `json:"metric"`
	Count  uint64  `json:"count"`
	Mean   float64 `json:"meanSeconds"`
	P50    float64 `json:"p50Seconds"`
	P95    float64 `json:"p95Seconds"`
}

// adminOperation is an operation as an operator sees it: every field but
// the recorded request and the stored response.
type adminOperation struct {
	ID        string           `json:"id"`
	Status    backend.Status   `json:"status"`
	Owner     string           `json:"owner"` // the owner's digest, "" without owners
	Attempt   int              `json:"attempt"`
	Progress  progressDoc      `json:"progress"`
	Error     *problem.Details `json:"error,omitempty"`
	CreatedAt time.Time        `json:"createdAt"`
	UpdatedAt time.Time        `json:"updatedAt"`
	ExpiresAt *time.Time       `json:"expiresAt,omitempty"`
	// AgeSeconds is from creation to the summary's time.
	AgeSeconds       float64 `json:"ageSeconds"`
	TimeoutSeconds   float64 `json:"timeoutSeconds"`
	RetentionSeconds float64 `json:"retentionSeconds"`
	// Rerunnable is whether the recorded request is still held: while the
	// operation has not finished.
	Rerunnable bool `json:"rerunnable"`
}

func newAdminOperation(op *backend.Operation, now time.Time) adminOperation {
	a := adminOperation{
		ID:               op.ID,
		Status:           op.Status,
		Owner:            op.Owner,
		Attempt:          op.Attempt,
		Progress:         progressDoc{Percent: op.Progress.Percent, Message: op.Progress.Message},
		CreatedAt:        op.CreatedAt.UTC(),
		UpdatedAt:        op.UpdatedAt.UTC(),
		AgeSeconds:       max(0, now.Sub(op.CreatedAt).Seconds()),
		TimeoutSeconds:   op.Timeout.Seconds(),
		RetentionSeconds: op.Retention.Seconds(),
		Rerunnable:       !op.Status.Done(),
	}
	if !op.ExpiresAt.IsZero() {
		expires := op.ExpiresAt.UTC()
		a.ExpiresAt = &expires
	}
	switch op.Status {
	case backend.Succeeded:
		a.Progress.Percent = 100
	case backend.Failed:
		a.Error = problemFromFailure(op.Failure)
	}
	return a
}

// summary gathers the dashboard. What the store cannot answer is left out
// and said in Unavailable; the metrics this process keeps are always there.
func (m *Middleware) summary(ctx context.Context) *dashboardSummary {
	now := m.cfg.now()
	mt := m.metrics
	s := &dashboardSummary{
		GeneratedAt: now.UTC(),
		Listing:     m.lister != nil,
		Recent: recentRates{
			WindowSeconds: int(recentWindow / time.Second),
			Accepted:      mt.recent.accepted.count(now),
			Succeeded:     mt.recent.succeeded.count(now),
			Failed:        mt.recent.failed.count(now),
		},
		Durations: []durationSummary{
			summarizeHistogram("Queue wait", "asyncreply_operation_queue_wait_seconds", mt.queueWait),
			summarizeHistogram("Run", "asyncreply_operation_run_duration_seconds", mt.runDuration),
			summarizeHistogram("End to end", "asyncreply_operation_duration_seconds", mt.totalDuration),
		},
		ReplaysInFlight: int(gaugeValue(mt.replays)),
		WatchesOpen:     int(gaugeValue(mt.watchesOpen)),
		InFlight:        []adminOperation{},
		Failures:        []adminOperation{},
	}
	if m.lister == nil {
		return s
	}
	ctx, cancel := storeContext(ctx)
	defer cancel()
	counts, countedAt, err := mt.stored.get(ctx)
	if err == nil {
		countedAt = countedAt.UTC()
		s.Counts, s.CountedAt = counts, &countedAt
		s.InFlight, err = m.adminList(ctx, now, dashboardInFlight, backend.NotStarted, backend.Running)
	}
	if err == nil {
		s.Failures, err = m.adminList(ctx, now, dashboardFailures, backend.Failed)
	}
	if err != nil {
		m.cfg.Logger.Error("asyncreply: reading the dashboard's operations failed", "error", err)
		s.Unavailable = "The store could not be read; the counts and lists are missing. Retry later."
	}
	return s
}

// adminList lists the newest operations in statuses, of every owner.
func (m *Middleware) adminList(ctx context.Context, now time.Time, size int, statuses ...backend.Status) ([]adminOperation, error) {
	page, err := m.lister.List(ctx, backend.ListQuery{AnyOwner: true, Statuses: statuses, PageSize: size, Now: now})
	if err != nil {
		return nil, err
	}
	ops := make([]adminOperation, len(page.Operations))
	for i, op := range page.Operations {
		ops[i] = newAdminOperation(op, now)
	}
	return ops, nil
}

func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return 0
	}
	return m.GetGauge().GetValue()
}

func summarizeHistogram(name, metric string, h prometheus.Histogram) durationSummary {
	d := durationSummary{Name: name, Metric: metric}
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		return d
	}
	hist := m.GetHistogram()
	d.Count = hist.GetSampleCount()
	if d.Count == 0 {
		return d
	}
	d.Mean = hist.GetSampleSum() / float64(d.Count)
	d.P50 = bucketQuantile(0.5, hist)
	d.P95 = bucketQuantile(0.95, hist)
	return d
}

// bucketQuantile estimates the q-quantile of a histogram as PromQL's
// histogram_quantile does: it finds the bucket the rank falls in and
// interpolates linearly within it, taking 0 as the first bucket's lower
// bound. A rank past the last finite bucket is that bucket's upper bound,
// the most the buckets can tell.
func bucketQuantile(q float64, hist *dto.Histogram) float64 {
	total := float64(hist.GetSampleCount())
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range hist.GetBucket() {
		upper, cumulative := b.GetUpperBound(), float64(b.GetCumulativeCount())
		if math.IsInf(upper, +1) {
			break
		}
		if cumulative >= rank && cumulative > below {
			return lower + (upper-lower)*(rank-below)/(cumulative-below)
		}
		lower, below = upper, cumulative
	}
	return lower
}
