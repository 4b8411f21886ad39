package sqlite_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// acceptExecuteClients is how many clients submit at once, as in the load
// harness's closed loop.
const acceptExecuteClients = 16

// BenchmarkAcceptExecute accepts b.N operations over loopback HTTP from 16
// concurrent clients and lasts until every one of them has been executed
// and its response stored: the path the load harness's accept scenario
// measures, in a form go test can profile.
//
//	go test -run '^$' -bench AcceptExecute -benchtime 5000x -cpuprofile cpu.out ./backend/sqlite/
//	go tool pprof -top cpu.out
func BenchmarkAcceptExecute(b *testing.B) {
	be := newBackend(b, newPath(b))
	var executed atomic.Int64
	h, shutdown, err := benchutil.Serve(asyncreply.Config{Backend: be, Key: benchutil.Key, Retention: 2 * time.Second,
		SweepInterval: 500 * time.Millisecond}, benchutil.Reports(&executed))
	if err != nil {
		b.Fatal(err)
	}
	defer shutdown()
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: acceptExecuteClients}}
	defer client.CloseIdleConnections()

	latencies := make([][]time.Duration, acceptExecuteClients)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	started, cpuBefore := time.Now(), cpuTime()
	for c := range acceptExecuteClients {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				sent := time.Now()
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
				latencies[c] = append(latencies[c], time.Since(sent))
			}
		})
	}
	wg.Wait()
	acceptedIn := time.Since(started)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for executed.Load() < int64(b.N) {
		select {
		case <-ctx.Done():
			b.Fatalf("%d of %d operations executed after 2 minutes", executed.Load(), b.N)
		case <-time.After(time.Millisecond):
		}
	}
	elapsed, cpu := time.Since(started), cpuTime()-cpuBefore
	b.StopTimer()
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(b.N)/acceptedIn.Seconds(), "accepted/s")
	// The process's CPU time per operation, clients and server together:
	// what other work on the machine moves least.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	benchutil.ReportPercentiles(b, all)
}
