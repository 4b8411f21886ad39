package client_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/client"
)

// countingTransport counts the requests a client sends.
type countingTransport struct {
	base     http.RoundTripper
	requests atomic.Int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.requests.Add(1)
	return c.base.RoundTrip(req)
}

// requestsPerOperation returns how many requests a Transport with default
// intervals, tweaked by tweak, sends to follow an operation lasting d on an
// asyncreply server with default settings (Retry-After: 1).
func requestsPerOperation(tb testing.TB, tweak func(*client.Transport), d time.Duration) int64 {
	tb.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /report", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
			w.Write([]byte("ready"))
		case <-r.Context().Done():
		}
	})))
	srv := serve(tb, asyncreply.Config{}, mux, nil)
	counter := &countingTransport{base: srv.Client().Transport}
	tr := &client.Transport{Base: counter}
	tweak(tr)
	ctx, cancel := context.WithTimeout(context.Background(), d+waitLimit)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/report", nil)
	resp, err := client.New(tr).Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET /report = %d", resp.StatusCode)
	}
	return counter.requests.Load()
}

// TestRequestsPerOperation measures the requests a caller makes for a
// two-second operation; BenchmarkRequestsPerOperation does it for ten.
func TestRequestsPerOperation(t *testing.T) {
	if testing.Short() {
		t.Skip("follows two-second operations")
	}
	t.Parallel()
	const d = 2 * time.Second
	// Loose bounds: submit, (stream or held poll), result; polling adds one
	// poll a second at most.
	limits := map[string]int64{"events": 3, "long-poll": 4, "polling": int64(d/client.DefaultMinPollInterval) + 4}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			n := requestsPerOperation(t, mode.tweak, d)
			t.Logf("%s: %d requests for a %s operation", mode.name, n, d)
			if n > limits[mode.name] {
				t.Errorf("%s: %d requests, want at most %d", mode.name, n, limits[mode.name])
			}
		})
	}
}

// BenchmarkRequestsPerOperation reports the requests a caller makes for a
// ten-second operation in each mode. Run it once:
//
//	go test -run '^$' -bench RequestsPerOperation -benchtime 1x ./client/
func BenchmarkRequestsPerOperation(b *testing.B) {
	const d = 10 * time.Second
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			var total int64
			for b.Loop() {
				total += requestsPerOperation(b, mode.tweak, d)
			}
			b.ReportMetric(float64(total)/float64(b.N), "requests/op")
		})
	}
}
