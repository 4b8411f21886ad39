package load

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	h := NewHistogram()
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 9900 * time.Microsecond}, {0.999, 9990 * time.Microsecond}, {1, 10 * time.Millisecond}} {
		got := h.Quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.016 {
			t.Errorf("Quantile(%v) = %v, want %v to 1.6%% above", c.q, got, c.want)
		}
	}
	if h.Count() != 10000 || h.Min() != time.Microsecond || h.Max() != 10*time.Millisecond {
		t.Errorf("count %d, min %v, max %v", h.Count(), h.Min(), h.Max())
	}
	if mean := h.Mean(); mean < 5000*time.Microsecond || mean > 5001*time.Microsecond {
		t.Errorf("mean %v, want 5.0005ms", mean)
	}
}

func TestHistogramSmallAndHuge(t *testing.T) {
	t.Parallel()
	h := NewHistogram()
	h.Record(-time.Second)
	h.Record(3)
	h.Record(100 * 365 * 24 * time.Hour)
	if h.Quantile(0.1) != 0 || h.Quantile(0.5) != 3 || h.Quantile(1) != h.Max() {
		t.Errorf("quantiles %v %v %v", h.Quantile(0.1), h.Quantile(0.5), h.Quantile(1))
	}
	if NewHistogram().Quantile(0.5) != 0 {
		t.Error("an empty histogram has no quantile")
	}
}

// A server that stalls once delays every request due during the stall: the
// open loop counts those delays, the closed loop's clients never send them.
func TestOpenLoopCountsTheWaitOfRequestsDueDuringAStall(t *testing.T) {
	t.Parallel()
	const stall = 100 * time.Millisecond
	do := func(ctx context.Context, seq int) error {
		if seq == 0 {
			time.Sleep(stall)
		}
		return nil
	}
	open, err := Run(context.Background(), Config{Concurrency: 1, Rate: 1000, Requests: 50}, do)
	if err != nil {
		t.Fatal(err)
	}
	if open.Requests != 50 || open.Errors != 0 {
		t.Fatalf("open loop: %d requests, %d errors", open.Requests, open.Errors)
	}
	// Requests 1 to 49 were due during the stall: most waited for it.
	if p50 := open.Latency.Quantile(0.5); p50 < stall/3 {
		t.Errorf("open loop p50 = %v, want most requests delayed by the %v stall", p50, stall)
	}
	closed, err := Run(context.Background(), Config{Concurrency: 1, Requests: 50}, do)
	if err != nil {
		t.Fatal(err)
	}
	if p50 := closed.Latency.Quantile(0.5); p50 > stall/3 {
		t.Errorf("closed loop p50 = %v, want only the first request to see the stall", p50)
	}
}

func TestRunStopsAtItsDuration(t *testing.T) {
	t.Parallel()
	res, err := Run(context.Background(), Config{Concurrency: 4, Duration: 50 * time.Millisecond}, func(ctx context.Context, seq int) error {
		time.Sleep(time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests == 0 || res.Elapsed > time.Second || res.Throughput() <= 0 {
		t.Errorf("%d requests in %v", res.Requests, res.Elapsed)
	}
	if _, err := Run(context.Background(), Config{}, nil); err == nil {
		t.Error("a run without bounds must be refused")
	}
}

func TestResultsAddUp(t *testing.T) {
	t.Parallel()
	var total Result
	for _, d := range []time.Duration{time.Millisecond, 3 * time.Millisecond} {
		h := NewHistogram()
		h.Record(d)
		total.Add(Result{Requests: 1, Elapsed: d, Latency: h})
	}
	if total.Requests != 2 || total.Elapsed != 4*time.Millisecond || total.Throughput() != 500 {
		t.Errorf("%d requests in %v: %v/s", total.Requests, total.Elapsed, total.Throughput())
	}
	if total.Latency.Count() != 2 || total.Latency.Min() != time.Millisecond || total.Latency.Max() != 3*time.Millisecond || total.Latency.Mean() != 2*time.Millisecond {
		t.Errorf("merged latencies: %d, min %v, max %v, mean %v", total.Latency.Count(), total.Latency.Min(), total.Latency.Max(), total.Latency.Mean())
	}
}
