package asyncreply

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The quantiles interpolate within the bucket the rank falls in, as
// histogram_quantile does, and stop at the last finite bucket.
func TestSummarizeHistogram(t *testing.T) {
	t.Parallel()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: []float64{1, 2, 4}})
	for _, v := range []float64{0.5, 1.5, 1.5, 3} {
		h.Observe(v)
	}
	d := summarizeHistogram("H", "h", h)
	// Ranks: p50 is the 2nd of 4, halfway into (1, 2], which holds 2;
	// p95 is 3.8 of 4, 80% into (2, 4], which holds 1.
	if d.Count != 4 || d.Mean != 1.625 || math.Abs(d.P50-1.5) > 1e-9 || math.Abs(d.P95-3.6) > 1e-9 {
		t.Errorf("summary = %+v, want count 4, mean 1.625, p50 1.5, p95 3.6", d)
	}
	h.Observe(100) // past every bucket
	h.Observe(100)
	if d := summarizeHistogram("H", "h", h); d.P95 != 4 {
		t.Errorf("p95 past the buckets = %v, want the last bound, 4", d.P95)
	}
	if d := summarizeHistogram("E", "e", prometheus.NewHistogram(prometheus.HistogramOpts{Name: "e"})); d.Count != 0 || d.P50 != 0 {
		t.Errorf("empty = %+v", d)
	}
}

// recentCounter counts the minute up to now: older events drop out, and
// a slot reused a minute later starts from zero.
func TestRecentCounter(t *testing.T) {
	t.Parallel()
	var c recentCounter
	start := time.Unix(1_000_000, 0)
	c.add(start)
	c.add(start.Add(30 * time.Second))
	c.add(start.Add(59 * time.Second))
	if got := c.count(start.Add(59 * time.Second)); got != 3 {
		t.Errorf("within the minute = %d, want 3", got)
	}
	if got := c.count(start.Add(60 * time.Second)); got != 2 {
		t.Errorf("a minute after the first = %d, want 2", got)
	}
	c.add(start.Add(60 * time.Second)) // the first one's slot
	if got := c.count(start.Add(60 * time.Second)); got != 3 {
		t.Errorf("after reusing the first one's slot = %d, want 3", got)
	}
}
