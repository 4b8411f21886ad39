// Package benchutil holds what the benchmarks share, the Go benchmarks
// beside the code and the load harness in bench alike: the application
// they accept for, the baselines they are judged against (a plain handler
// replaying recorded bytes, a hand-written River handler), an accept-only
// backend, the measure of retained memory, and percentile reporting.
package benchutil

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
)

// Key turns encryption at rest on, as in production.
var Key = make([]byte, 32)

// AcceptOnly is a backend whose process accepts but never executes, as a
// gateway beside separate worker processes does.
type AcceptOnly struct{ backend.Backend }

// Start implements backend.Backend by executing nothing.
func (AcceptOnly) Start(context.Context, backend.ExecuteFunc) error { return nil }

// Reports is the application the benchmarks accept for: GET /reports/{id}
// is asynchronous and fast, so that what is measured is asyncreply and its
// backend. When executed is not nil, it counts the replays run.
func Reports(executed *atomic.Int64) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if executed != nil {
			executed.Add(1)
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "report "+r.PathValue("id"))
	})))
	return mux
}

// Serve wraps app in asyncreply configured by cfg, logging nowhere. The
// caller calls shutdown when done with the handler.
func Serve(cfg asyncreply.Config, app http.Handler) (h http.Handler, shutdown func(), err error) {
	cfg.Logger = slog.New(slog.DiscardHandler)
	ar, err := asyncreply.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return ar.Handler(app), func() { ar.Shutdown(context.Background()) }, nil
}

// App serves Reports through asyncreply on be, with encryption at rest.
func App(b *testing.B, be backend.Backend) http.Handler {
	h, shutdown, err := Serve(asyncreply.Config{Backend: be, Key: Key}, Reports(nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(shutdown)
	return h
}

// NewID returns an operation ID as asyncreply makes them: 128 random bits,
// base64url.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// RunAccept measures GET /reports/7 on h over loopback HTTP, with enough
// concurrent clients to keep a database busy; every answer must be 202.
func RunAccept(b *testing.B, h http.Handler) {
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer client.CloseIdleConnections()
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(srv.URL + "/reports/7")
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("status %d, want 202", resp.StatusCode)
				return
			}
		}
	})
}

// ReportPercentiles reports the p50 and p99 of latencies, in milliseconds.
func ReportPercentiles(b *testing.B, latencies []time.Duration) {
	if len(latencies) == 0 {
		return
	}
	slices.Sort(latencies)
	at := func(p float64) float64 {
		return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

// NotificationLatency measures, b.N times, the time from the start of
// completer.Complete to the wake-up of a watcher on watcher, for an
// operation created on completer, and reports its percentiles.
func NotificationLatency(b *testing.B, watcher, completer backend.Backend) {
	ctx := context.Background()
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		id := NewID()
		if _, _, err := completer.Create(ctx, &backend.Operation{ID: id, Retention: time.Hour, CreatedAt: time.Now()}); err != nil {
			b.Fatal(err)
		}
		changes, stop, err := watcher.Watch(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := completer.Complete(ctx, id, backend.Outcome{Status: backend.Succeeded, Response: []byte("x"), At: start}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-changes:
			latencies = append(latencies, time.Since(start))
		case <-time.After(10 * time.Second):
			b.Fatal("no notification within 10s")
		}
		stop()
	}
	ReportPercentiles(b, latencies)
}
