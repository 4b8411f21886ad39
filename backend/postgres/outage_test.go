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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/internal/benchutil"
	"github.com/asyncreply/asyncreply/internal/testdb"
	"github.com/asyncreply/asyncreply/internal/testprocess"
)

// faultProxy forwards TCP connections to PostgreSQL until a fault is set:
//
//   - cut: it drops every connection and refuses new ones, as a network
//     partition or a database restart would;
//   - blackHole: the connections it holds, and those it accepts, stay open
//     and are read, but nothing goes through in either direction, as with
//     a database that hangs or a network that silently drops packets. A
//     connection caught in it stays so, its stream broken, and neither end
//     hears that the other has gone.
//
// Restoring it (noFault) forwards new connections again.
type faultProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	fault fault
	links map[net.Conn]*link // every open connection, of either side
	wg    sync.WaitGroup
}

type fault int

const (
	noFault fault = iota
	cut
	blackHole
)

// link is one forwarded connection, client and server sides.
type link struct {
	lost atomic.Bool // black-holed: forwards nothing any more
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, links: make(map[net.Conn]*link)}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.setFault(cut)
		p.wg.Wait()
	})
	return p
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		switch p.fault {
		case cut:
			client.Close()
		case blackHole:
			l := &link{}
			l.lost.Store(true)
			p.links[client] = l
			p.wg.Add(1)
			go p.pipe(nil, client, l)
		default:
			server, err := net.Dial("tcp", p.target)
			if err != nil {
				client.Close()
				break
			}
			l := &link{}
			p.links[client], p.links[server] = l, l
			p.wg.Add(2)
			go p.pipe(client, server, l)
			go p.pipe(server, client, l)
		}
		p.mu.Unlock()
	}
}

// pipe copies src to dst until either fails, then closes both; once the
// link is lost it reads src and discards it, and closes only src when it
// ends, so that the other side never learns.
func (p *faultProxy) pipe(dst, src net.Conn, l *link) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.lost.Load() {
			if _, writeErr := dst.Write(buf[:n]); writeErr != nil {
				err = writeErr
			}
		}
		if err != nil {
			break
		}
	}
	closing := []net.Conn{src}
	if !l.lost.Load() {
		closing = append(closing, dst)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range closing {
		c.Close()
		delete(p.links, c)
	}
}

func (p *faultProxy) setFault(f fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = f
	for c, l := range p.links {
		switch f {
		case cut:
			c.Close()
		case blackHole:
			l.lost.Store(true)
		}
	}
}

// storeTimeout is the middleware's bound on one store call made for a
// request: past it the request is answered 503.
const storeTimeout = 10 * time.Second

// outage is a service on PostgreSQL through a faultProxy, with the
// operations it acknowledged.
type outage struct {
	t       *testing.T
	direct  *pgxpool.Pool // to the database, not through the proxy
	schema  string
	proxy   *faultProxy
	srv     *httptest.Server
	client  *http.Client
	started chan struct{} // receives as attempts start running

	mu       sync.Mutex
	accepted map[string]string // report ID → monitor URL
}

// newOutage starts the service, its pool prepared by ConfigurePool as the
// gateway's is, and a report handler slow enough that an outage begins
// while attempts run: they must store their outcome once the database is
// back.
func newOutage(t *testing.T) *outage {
	t.Helper()
	o := &outage{t: t, direct: testdb.Pool(t, 2), started: make(chan struct{}, 100), accepted: map[string]string{}}
	o.schema = testdb.Schema(t, o.direct)
	target, err := url.Parse(testdb.URL())
	if err != nil {
		t.Fatal(err)
	}
	o.proxy = newFaultProxy(t, target.Host)
	viaProxy := *target
	viaProxy.Host = o.proxy.ln.Addr().String()
	poolConfig, err := pgxpool.ParseConfig(viaProxy.String())
	if err != nil {
		t.Fatal(err)
	}
	postgres.ConfigurePool(poolConfig)
	poolConfig.MaxConns = 10
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
	be, err := postgres.New(ctx, postgres.Config{Pool: pool, Schema: o.schema, Logger: logger, RescueAfter: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := asyncreply.New(asyncreply.Config{Backend: be, Logger: logger, Key: benchutil.Key, SweepInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case o.started <- struct{}{}:
		default:
		}
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "report "+r.PathValue("id"))
	})))
	o.srv = httptest.NewServer(ar.Handler(mux))
	t.Cleanup(func() {
		o.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ar.Shutdown(ctx)
	})
	o.client = o.srv.Client()
	o.client.Timeout = 30 * time.Second // a hung request fails the test rather than the run
	o.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return o
}

// submit submits a report and returns the answer's status, 202 or 503;
// a 503 must come with Retry-After and problem details. It may be called
// from any goroutine.
func (o *outage) submit(report string) int {
	o.t.Helper()
	resp, err := o.client.Post(o.srv.URL+"/reports/"+report, "text/plain", strings.NewReader("body"))
	if err != nil {
		o.t.Errorf("submit %s: %v", report, err)
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusAccepted:
		o.mu.Lock()
		o.accepted[report] = resp.Header.Get("Location")
		o.mu.Unlock()
	case http.StatusServiceUnavailable:
		if resp.Header.Get("Retry-After") == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
			o.t.Errorf("503 without Retry-After or problem details: %v", resp.Header)
		}
	default:
		o.t.Errorf("submit %s: status %d, want 202 or 503", report, resp.StatusCode)
	}
	return resp.StatusCode
}

// submitUntilAccepted submits report until it is accepted, and returns
// when that was.
func (o *outage) submitUntilAccepted(report string, limit time.Duration) time.Time {
	o.t.Helper()
	deadline := time.Now().Add(limit)
	for code := o.submit(report); code != http.StatusAccepted; code = o.submit(report) {
		if time.Now().After(deadline) {
			o.t.Fatalf("the service did not recover: %s still answered %d after %v", report, code, limit)
		}
		time.Sleep(100 * time.Millisecond) // a retrying client's pause, not synchronisation
	}
	return time.Now()
}

// awaitAccepted checks that every operation that got a 202 completes with
// its response. Attempts interrupted by the outage are retried within
// seconds, doubling up to 30 s: two minutes cover them.
func (o *outage) awaitAccepted() {
	o.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for report, location := range o.accepted {
		body, err := testprocess.AwaitResponse(o.client, location, time.Until(deadline))
		if err != nil {
			o.t.Errorf("operation %s (acknowledged with 202): %v", report, err)
			logStates(o.t, o.direct, o.schema)
			continue
		}
		if want := "report " + report; body != want {
			o.t.Errorf("operation %s: response %q, want %q", report, body, want)
		}
	}
}

// During a database outage, accepts and polls answer 503 with Retry-After
// and nothing is acknowledged that was not stored; when the database comes
// back the service recovers by itself, and every operation that got a 202,
// before or after the outage, completes with its response.
func TestOutage(t *testing.T) {
	t.Parallel()
	o := newOutage(t)
	for i := range 10 {
		if code := o.submit(fmt.Sprint("before-", i)); code != http.StatusAccepted {
			t.Fatalf("before the outage: status %d, want 202", code)
		}
	}

	<-o.started // cut while attempts run
	o.proxy.setFault(cut)
	unavailable := 0
	for i := range 10 {
		if code := o.submit(fmt.Sprint("during-", i)); code == http.StatusServiceUnavailable {
			unavailable++
		}
	}
	if unavailable == 0 {
		t.Error("no submit was answered 503 while the database was unreachable")
	}
	t.Logf("during the outage: %d of 10 submits answered 503, the others 202", unavailable)
	poll, err := o.client.Get(o.accepted["before-0"])
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
	o.proxy.setFault(noFault)
	for i := range 10 {
		o.submitUntilAccepted(fmt.Sprint("after-", i), 30*time.Second)
	}
	o.awaitAccepted()
}

// A database that accepts connections but never answers is the harder
// outage: no connection breaks, so only the pool's timeouts (ConfigurePool)
// and the backend's pings tell. While it lasts, submits and polls are
// answered 503 within the store timeout; within 5 s of the database
// answering again a submit is accepted, an operation submitted then runs
// and its long-poll wakes as it completes (River's fetches and the
// backend's LISTEN have recovered too), and every operation that got a 202
// completes.
func TestOutageBlackHole(t *testing.T) {
	t.Parallel()
	o := newOutage(t)
	for i := range 10 {
		if code := o.submit(fmt.Sprint("before-", i)); code != http.StatusAccepted {
			t.Fatalf("before the outage: status %d, want 202", code)
		}
	}

	polled := o.accepted["before-0"]
	<-o.started // while attempts run
	o.proxy.setFault(blackHole)
	began := time.Now()
	var wg sync.WaitGroup
	slowest := make([]time.Duration, 5)
	for i := range slowest {
		wg.Go(func() {
			start := time.Now()
			if code := o.submit(fmt.Sprint("during-", i)); code != http.StatusServiceUnavailable {
				t.Errorf("submit during the outage: status %d, want 503", code)
			}
			slowest[i] = time.Since(start)
		})
	}
	wg.Go(func() {
		poll, err := o.client.Get(polled)
		if err != nil {
			t.Error(err)
			return
		}
		poll.Body.Close()
		if poll.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("poll during the outage: status %d, want 503", poll.StatusCode)
		}
	})
	wg.Wait()
	if longest := slices.Max(slowest); longest > storeTimeout+time.Second {
		t.Errorf("a submit during the outage took %v to be answered 503, longer than the store timeout", longest)
	}
	t.Logf("during the outage, submits were answered 503 after %v", slowest)

	time.Sleep(time.Until(began.Add(outageLength)))
	o.proxy.setFault(noFault)
	restored := time.Now()
	recovered := o.submitUntilAccepted("after-0", 30*time.Second).Sub(restored)
	if recovered > 5*time.Second {
		t.Errorf("the first submit was accepted %v after the database answered again, want within 5s", recovered)
	}

	// An operation submitted now runs (River fetches again) and its
	// long-poll wakes when it completes (the backend listens again).
	o.submitUntilAccepted("after-1", 30*time.Second)
	req, _ := http.NewRequest(http.MethodGet, o.accepted["after-1"], nil)
	req.Header.Set("Prefer", "wait=20")
	poll, err := o.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	poll.Body.Close()
	completed := time.Since(restored)
	if poll.StatusCode != http.StatusSeeOther {
		t.Errorf("long-poll of an operation submitted after the outage: status %d after %v, want 303", poll.StatusCode, completed)
	} else if completed > 5*time.Second+time.Second {
		t.Errorf("an operation submitted after the outage completed %v after the database answered again", completed)
	}
	t.Logf("the database answered again: a submit was accepted %v later, an operation submitted then completed %v later",
		recovered.Round(10*time.Millisecond), completed.Round(10*time.Millisecond))
	o.awaitAccepted()
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
