// Package load generates HTTP load and measures it: a closed loop of
// concurrent clients, each sending its next request when the previous one
// is answered, or an open loop sending at a fixed rate whatever the server
// does, with latencies in a logarithmic [Histogram].
//
// In the open loop a request's latency runs from the time it was due to be
// sent, not from when it was sent: a server that stalls delays the
// requests queued behind the stall, and those delays count. Measuring from
// the actual send would hide them (coordinated omission).
package load

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Config bounds and shapes a run. A run stops at Duration or after Requests
// requests, whichever comes first; at least one of them must be set.
type Config struct {
	// Concurrency is the number of clients of a closed loop, or in an open
	// loop the most requests in flight at once (requests due while all are
	// busy wait for one, and their wait counts in their latency). Defaults
	// to 1.
	Concurrency int

	// Rate, when positive, makes the loop open: requests are due at this
	// many per second from the start. Defaults to 0: a closed loop.
	Rate float64

	// Duration is how long requests are sent. Zero: no time limit.
	Duration time.Duration

	// Requests is the most requests sent. Zero: no count limit.
	Requests int

	// Observe, when set, is called after each request with its sequence
	// number (its order of being due) and its latency, for callers that
	// split latencies by phase. It must be safe for concurrent use.
	Observe func(seq int, latency time.Duration)
}

// Result is what a run measured.
type Result struct {
	// Requests counts the requests answered, successfully or not.
	Requests int
	// Errors counts the requests whose function returned an error;
	// FirstError is the first of them.
	Errors     int
	FirstError error
	// Elapsed runs from the start to the last answer.
	Elapsed time.Duration
	// Latency holds the latency of every request, errors included.
	Latency *Histogram
}

// Throughput is the rate of answered requests, per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Add adds the measures of other, a run of the same load, to r, as if
// they had been one run lasting both runs' time.
func (r *Result) Add(other Result) {
	r.Requests += other.Requests
	r.Errors += other.Errors
	if r.FirstError == nil {
		r.FirstError = other.FirstError
	}
	r.Elapsed += other.Elapsed
	if r.Latency == nil {
		r.Latency = NewHistogram()
	}
	r.Latency.Merge(other.Latency)
}

// Run calls do once per request, from cfg.Concurrency goroutines, until
// the run's bounds are reached or ctx ends, and returns what it measured.
// seq numbers the requests from 0 in the order they were due.
func Run(ctx context.Context, cfg Config, do func(ctx context.Context, seq int) error) (Result, error) {
	if cfg.Duration <= 0 && cfg.Requests <= 0 {
		return Result{}, errors.New("load: a run needs a Duration or a Requests bound")
	}
	if cfg.Rate < 0 || cfg.Duration < 0 || cfg.Requests < 0 || cfg.Concurrency < 0 {
		return Result{}, errors.New("load: Rate, Duration, Requests and Concurrency must not be negative")
	}
	concurrency := max(cfg.Concurrency, 1)
	latency := NewHistogram()
	start := time.Now()
	var deadline time.Time
	if cfg.Duration > 0 {
		deadline = start.Add(cfg.Duration)
	}
	var (
		next       atomic.Int64
		requests   atomic.Int64
		errorCount atomic.Int64
		firstError error
		errorOnce  sync.Once
		clients    sync.WaitGroup
	)
	for range concurrency {
		clients.Go(func() {
			for ctx.Err() == nil {
				seq := int(next.Add(1) - 1)
				if cfg.Requests > 0 && seq >= cfg.Requests {
					return
				}
				due := time.Now()
				if cfg.Rate > 0 {
					due = start.Add(time.Duration(float64(seq) * float64(time.Second) / cfg.Rate))
					if !deadline.IsZero() && !due.Before(deadline) {
						return
					}
					if !sleepUntil(ctx, due) {
						return
					}
				} else if !deadline.IsZero() && !due.Before(deadline) {
					return
				}
				err := do(ctx, seq)
				took := time.Since(due)
				latency.Record(took)
				requests.Add(1)
				if err != nil {
					errorCount.Add(1)
					errorOnce.Do(func() { firstError = err })
				}
				if cfg.Observe != nil {
					cfg.Observe(seq, took)
				}
			}
		})
	}
	clients.Wait()
	return Result{
		Requests:   int(requests.Load()),
		Errors:     int(errorCount.Load()),
		FirstError: firstError,
		Elapsed:    time.Since(start),
		Latency:    latency,
	}, nil
}

// sleepUntil waits until t, and reports false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
