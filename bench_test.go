package asyncreply_test

// Benchmarks, each beside the baseline it is judged against, measured in the
// same run. Compare the sub-benchmarks' ns/op: ratio = baseline / asyncreply.
//
//	go test -run '^$' -bench . -benchtime 2s .

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// benchClient keeps enough idle connections for every parallel goroutine,
// so the benchmark measures the server rather than connection set-up.
func benchClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func newBenchMiddleware(b *testing.B, cfg asyncreply.Config, app http.Handler) http.Handler {
	b.Helper()
	h, shutdown, err := benchutil.Serve(cfg, app)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(shutdown)
	return h
}

// runHTTP measures h behind a real loopback server, requests in parallel.
func runHTTP(b *testing.B, h http.Handler, method, path string, wantStatus int) {
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := benchClient()
	defer client.CloseIdleConnections()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(method, srv.URL+path, nil)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != wantStatus {
				b.Errorf("status %d, want %d", resp.StatusCode, wantStatus)
				return
			}
		}
	})
}

// runDirect measures h called in process, without the network: the
// middleware's own cost, magnified.
func runDirect(b *testing.B, h http.Handler, method, path string, wantStatus int) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
			if rec.Code != wantStatus {
				b.Errorf("status %d, want %d", rec.Code, wantStatus)
				return
			}
		}
	})
}

// benchConfig keeps the number of retained operations steady during long
// runs, as a server with a short retention would.
func benchConfig() asyncreply.Config {
	return asyncreply.Config{Retention: time.Second, SweepInterval: 100 * time.Millisecond}
}

// heldApp's asynchronous handler waits until release is called, so that
// its worker executes nothing while requests are accepted.
func heldApp() (app http.Handler, release func()) {
	held := make(chan struct{})
	return asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-held
	})), func() { close(held) }
}

// BenchmarkAccept: answering 202 for a new operation with the memory
// backend, against a plain handler writing the same 202 bytes. Goal: ≥ 0.7×
// the baseline. "memory" counts the whole cost of an operation, its replay
// by a worker included (the handler itself does next to nothing);
// "memory-accept-only" holds the workers, to show the cost of the accept path
// alone.
func BenchmarkAccept(b *testing.B) {
	for _, transport := range []struct {
		name string
		run  func(*testing.B, http.Handler, string, string, int)
	}{{"http", runHTTP}, {"direct", runDirect}} {
		b.Run(transport.name+"/baseline=plain", func(b *testing.B) {
			accepted := benchutil.Capture(newBenchMiddleware(b, benchConfig(), benchutil.Reports(nil)), httptest.NewRequest("GET", "/reports/7", nil))
			transport.run(b, accepted.Plain(), "GET", "/reports/7", http.StatusAccepted)
		})
		b.Run(transport.name+"/memory", func(b *testing.B) {
			transport.run(b, newBenchMiddleware(b, benchConfig(), benchutil.Reports(nil)), "GET", "/reports/7", http.StatusAccepted)
		})
		b.Run(transport.name+"/memory-accept-only", func(b *testing.B) {
			cfg := benchConfig()
			// Unbounded: held, the operations only pile up.
			cfg.Backend = memory.New(memory.Config{Concurrency: 1, MaxQueued: -1, MaxQueuedBytes: -1})
			app, release := heldApp()
			h := newBenchMiddleware(b, cfg, app)
			b.Cleanup(release) // before the Middleware's Shutdown, registered earlier
			transport.run(b, h, "GET", "/reports/7", http.StatusAccepted)
		})
	}
}

// BenchmarkPoll: polling a finished operation (303 to the response) and
// fetching its stored response, each against a plain handler writing the
// same bytes. Goal: ≥ 0.8× the baseline.
func BenchmarkPoll(b *testing.B) {
	h := newBenchMiddleware(b, asyncreply.Config{Inline: true}, benchutil.Reports(nil))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/reports/7", nil))
	// Inline answers as the first poll would: 303 to the response.
	monitor := strings.TrimSuffix(strings.TrimPrefix(rec.Header().Get("Location"), "http://example.com"), "/response")
	for _, resource := range []struct {
		name, path string
		status     int
	}{
		{"status", monitor, http.StatusSeeOther},
		{"response", monitor + "/response", http.StatusOK},
	} {
		for _, transport := range []struct {
			name string
			run  func(*testing.B, http.Handler, string, string, int)
		}{{"http", runHTTP}, {"direct", runDirect}} {
			b.Run(resource.name+"/"+transport.name+"/baseline=plain", func(b *testing.B) {
				transport.run(b, benchutil.Capture(h, httptest.NewRequest("GET", resource.path, nil)).Plain(), "GET", resource.path, resource.status)
			})
			b.Run(resource.name+"/"+transport.name+"/memory", func(b *testing.B) {
				transport.run(b, h, "GET", resource.path, resource.status)
			})
		}
	}
}

// BenchmarkRetainedMemory measures the heap held per finished operation
// kept by the memory backend, at 100,000 operations, beyond the bytes of
// its stored response body. Goal: under 1 KiB.
func BenchmarkRetainedMemory(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 64)
	for range b.N {
		perOperation, err := benchutil.RetainedBytes(100_000, body)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(perOperation, "B/operation")
		b.ReportMetric(perOperation-float64(len(body)), "B/operation-beyond-body")
	}
}
