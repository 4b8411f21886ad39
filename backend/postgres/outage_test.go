package postgres_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/internal/benchutil"
	"github.com/asyncreply/asyncreply/internal/testdb"
	"github.com/asyncreply/asyncreply/internal/testprocess"
)

// cutProxy forwards TCP connections to PostgreSQL until it is cut: then it
// drops every connection and refuses new ones, as a network partition or a
// database restart would, until it is restored.
type cutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			client.Close()
			continue
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			client.Close()
			continue
		}
		p.conns[client], p.conns[server] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(client, server)
		go p.pipe(server, client)
	}
}

func (p *cutProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// During a database outage, accepts and polls answer 503 with Retry-After
// and nothing is acknowledged that was not stored; when the database comes
// back the service recovers by itself, and every operation that got a 202,
// before or after the outage, completes with its response.
func TestOutage(t *testing.T) {
	t.Parallel()
	direct := testdb.Pool(t, 2)
	schema := testdb.Schema(t, direct)
	target, err := url.Parse(testdb.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, target.Host)
	viaProxy := *target
	viaProxy.Host = proxy.ln.Addr().String()
	poolConfig, err := pgxpool.ParseConfig(viaProxy.String())
	if err != nil {
		t.Fatal(err)
	}
	poolConfig.MaxConns = 10
	poolConfig.ConnConfig.ConnectTimeout = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, poolConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	logger := slog.New(slog.DiscardHandler)
	// The default operation timeout: an attempt cut off by the outage must
	// carry on when the database is back, not wait ten minutes for River to
	// rescue its job. A job whose fetch was cut off is rescheduled by the
	// sweep once RescueAfter has passed, shortened here with the sweep's
	// interval.
	be, err := postgres.New(ctx, postgres.Config{Pool: pool, Schema: schema, Logger: logger, RescueAfter: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := asyncreply.New(asyncreply.Config{Backend: be, Logger: logger, Key: benchutil.Key, SweepInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	// Slow enough that the outage begins while attempts run: they must
	// store their outcome once the database is back.
	started := make(chan struct{}, 100)
	mux.Handle("POST /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case started <- struct{}{}:
		default:
		}
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "report "+r.PathValue("id"))
	})))
	srv := httptest.NewServer(ar.Handler(mux))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ar.Shutdown(ctx)
	})
	client := srv.Client()
	client.Timeout = 30 * time.Second // a hung request fails the test rather than the run
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	accepted := map[string]string{} // report ID → monitor URL
	submit := func(report string) (int, http.Header) {
		t.Helper()
		resp, err := client.Post(srv.URL+"/reports/"+report, "text/plain", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			accepted[report] = resp.Header.Get("Location")
		case http.StatusServiceUnavailable:
			if resp.Header.Get("Retry-After") == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
				t.Errorf("503 without Retry-After or problem details: %v", resp.Header)
			}
		default:
			t.Errorf("submit %s: status %d, want 202 or 503", report, resp.StatusCode)
		}
		return resp.StatusCode, resp.Header
	}

	for i := range 10 {
		if code, _ := submit(fmt.Sprint("before-", i)); code != http.StatusAccepted {
			t.Fatalf("before the outage: status %d, want 202", code)
		}
	}

	<-started // cut while attempts run
	proxy.setCut(true)
	unavailable := 0
	for i := range 10 {
		if code, _ := submit(fmt.Sprint("during-", i)); code == http.StatusServiceUnavailable {
			unavailable++
		}
	}
	if unavailable == 0 {
		t.Error("no submit was answered 503 while the database was unreachable")
	}
	t.Logf("during the outage: %d of 10 submits answered 503, the others 202", unavailable)
	poll, err := client.Get(accepted["before-0"])
	if err != nil {
		t.Fatal(err)
	}
	poll.Body.Close()
	if poll.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("poll during the outage: status %d, want 503", poll.StatusCode)
	}

	// Keep the database away for longer than River retries recording an
	// attempt's end (about 7 s).
	time.Sleep(outageLength)
	proxy.setCut(false)
	for i := range 10 {
		report := fmt.Sprint("after-", i)
		deadline := time.Now().Add(30 * time.Second)
		for code, _ := submit(report); code != http.StatusAccepted; code, _ = submit(report) {
			if time.Now().After(deadline) {
				t.Fatalf("the service did not recover: %s still answered %d after 30s", report, code)
			}
			time.Sleep(100 * time.Millisecond) // a retrying client's pause, not synchronisation
		}
	}

	// Attempts interrupted by the outage are retried within seconds, doubling
	// up to 30 s: two minutes cover every acknowledged operation.
	deadline := time.Now().Add(2 * time.Minute)
	for report, location := range accepted {
		body, err := testprocess.AwaitResponse(client, location, time.Until(deadline))
		if err != nil {
			t.Errorf("operation %s (acknowledged with 202): %v", report, err)
			logStates(t, direct, schema)
			continue
		}
		if want := "report " + report; body != want {
			t.Errorf("operation %s: response %q, want %q", report, body, want)
		}
	}
}

// outageLength is how long TestOutage keeps the database unreachable.
const outageLength = 10 * time.Second

// logStates logs how many operations are in each state, beside their River
// jobs' states: what a failure to complete needs explained.
func logStates(t *testing.T, pool *pgxpool.Pool, schema string) {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT op.status, job.state, job.attempt, count(*)
		FROM `+schema+`.asyncreply_operation op LEFT JOIN `+schema+`.river_job job ON job.id = op.job_id
		GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`)
	if err != nil {
		t.Logf("reading states: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var status, state string
		var attempt, count int
		if err := rows.Scan(&status, &state, &attempt, &count); err == nil {
			t.Logf("operations %s, jobs %s at attempt %d: %d", status, state, attempt, count)
		}
	}
}
