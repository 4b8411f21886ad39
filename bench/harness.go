package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendurl"
	"github.com/asyncreply/asyncreply/bench/load"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// options size a run of the harness.
type options struct {
	scenarios []string      // names of the scenarios to run, in order
	duration  time.Duration // how long each target is measured, in rounds turns
	rounds    int           // turns a subject and its baseline take
	clients   int           // clients of a closed loop
	postgres  string        // the PostgreSQL URL; empty leaves PostgreSQL out
	nats      string        // the NATS server (JetStream); empty leaves the publisher out
	// cpuProfile, when set, is the prefix of notify-cost's CPU profiles,
	// one per run.
	cpuProfile string

	notifications int           // completions measured per backend and transport
	capacity      int           // concurrent slow operations
	hold          time.Duration // how long each of them runs
	retained      int           // operations retained, and swept, per backend
}

// fullOptions are the sizes of the published results.
func fullOptions() options {
	return options{
		scenarios: scenarioNames(), duration: 3 * time.Second, rounds: 3, clients: 16,
		notifications: 300, capacity: 10_000, hold: 5 * time.Second, retained: 100_000,
	}
}

// smokeOptions run every scenario tiny, to show the harness works, not to
// measure anything.
func smokeOptions() options {
	return options{
		scenarios: scenarioNames(), duration: 150 * time.Millisecond, rounds: 1, clients: 4,
		notifications: 10, capacity: 200, hold: 300 * time.Millisecond, retained: 200,
	}
}

// env is what the scenarios of one run share: where durable backends keep
// their files and schemas, cleaned up by close.
type env struct {
	opts options
	dir  string // SQLite files

	mu      sync.Mutex
	admin   *pgxpool.Pool // nil without PostgreSQL
	schemas []string

	closeOnce sync.Once
	closeErr  error
}

func newEnv(ctx context.Context, opts options) (*env, error) {
	dir, err := os.MkdirTemp("", "asyncreply-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{opts: opts, dir: dir}
	if opts.postgres != "" {
		e.admin, err = pgxpool.New(ctx, opts.postgres)
		if err == nil {
			err = e.admin.Ping(ctx)
		}
		if err != nil {
			e.close()
			return nil, fmt.Errorf("PostgreSQL at %s: %w", redact(opts.postgres), err)
		}
	}
	return e, nil
}

// close drops the PostgreSQL schemas and removes the SQLite files.
func (e *env) close() error {
	e.closeOnce.Do(func() { e.closeErr = e.cleanUp() })
	return e.closeErr
}

func (e *env) cleanUp() error {
	var errs []error
	if e.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, schema := range e.schemas {
			if _, err := e.admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
				errs = append(errs, fmt.Errorf("dropping schema %s: %w", schema, err))
			}
		}
		e.admin.Close()
	}
	errs = append(errs, os.RemoveAll(e.dir))
	return errors.Join(errs...)
}

// schema names a new schema, dropped by close; whoever migrates it creates it.
func (e *env) schema() string {
	var b [6]byte
	rand.Read(b[:])
	name := "bench_" + hex.EncodeToString(b[:])
	e.mu.Lock()
	e.schemas = append(e.schemas, name)
	e.mu.Unlock()
	return name
}

// pool opens a pool of its own on the benchmark database.
func (e *env) pool(ctx context.Context) (*pgxpool.Pool, error) {
	return pgxpool.New(ctx, withPoolSize(e.opts.postgres))
}

// poolSize is the connections of each pool: enough that the closed loop's
// clients do not queue for one.
const poolSize = 20

func withPoolSize(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL // pgx reports the error
	}
	q := u.Query()
	q.Set("pool_max_conns", fmt.Sprint(poolSize))
	u.RawQuery = q.Encode()
	return u.String()
}

func redact(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return u.Redacted()
	}
	return "the configured URL"
}

// kind is one of the backends every scenario measures.
type kind struct {
	name    string
	durable bool // it stores at rest, and is given a key as in production
}

// kinds are the backends available in this run.
func (e *env) kinds() []kind {
	kinds := []kind{{"memory", false}, {"sqlite", true}}
	if e.admin != nil {
		kinds = append(kinds, kind{"postgres", true})
	}
	return kinds
}

// open returns a new, empty backend of kind k, executing concurrency
// operations at once (0: the backend's default), as the gateway and the
// worker command open theirs.
func (e *env) open(ctx context.Context, k kind, concurrency int) (backend.Backend, error) {
	return e.openWith(ctx, k, backendurl.Options{Concurrency: concurrency})
}

// openWith is open with the backend's options spelled out.
func (e *env) openWith(ctx context.Context, k kind, opts backendurl.Options) (backend.Backend, error) {
	var rawURL string
	switch k.name {
	case "memory":
		rawURL = "memory:"
	case "sqlite":
		f, err := os.CreateTemp(e.dir, "*.db")
		if err != nil {
			return nil, err
		}
		f.Close()
		rawURL = "sqlite://" + filepath.ToSlash(f.Name())
	case "postgres":
		u, err := url.Parse(withPoolSize(e.opts.postgres))
		if err != nil {
			return nil, err
		}
		q := u.Query()
		q.Set("schema", e.schema())
		u.RawQuery = q.Encode()
		rawURL = u.String()
	}
	opts.Logger = quiet
	return backendurl.Open(ctx, rawURL, opts)
}

var quiet = slog.New(slog.DiscardHandler)

// serve runs asyncreply on a new backend of kind k around app, on a
// loopback server; stop shuts the server, then asyncreply, down.
func (e *env) serve(ctx context.Context, k kind, concurrency int, retention time.Duration, app http.Handler) (srv *httptest.Server, stop func(), err error) {
	be, err := e.open(ctx, k, concurrency)
	if err != nil {
		return nil, nil, err
	}
	return serveOn(be, k.durable, retention, app)
}

// Retentions of the scenarios' operations: brief where many are accepted,
// so that a long run holds a steady number of them, as a server with a
// short retention would; long enough elsewhere to be read back.
const (
	briefRetention = 2 * time.Second
	longRetention  = 10 * time.Minute
)

// serveOn runs asyncreply on be around app, on a loopback server,
// sweeping often.
func serveOn(be backend.Backend, durable bool, retention time.Duration, app http.Handler) (srv *httptest.Server, stop func(), err error) {
	cfg := asyncreply.Config{Backend: be, Retention: retention, SweepInterval: 500 * time.Millisecond}
	if durable {
		cfg.Key = benchutil.Key
	}
	return serveConfig(cfg, app)
}

// serveConfig runs asyncreply configured by cfg around app, on a loopback
// server; stop shuts the server, then asyncreply, down.
func serveConfig(cfg asyncreply.Config, app http.Handler) (srv *httptest.Server, stop func(), err error) {
	h, shutdown, err := benchutil.Serve(cfg, app)
	if err != nil {
		cfg.Backend.Stop(context.Background())
		return nil, nil, err
	}
	srv = httptest.NewServer(h)
	return srv, func() { srv.Close(); shutdown() }, nil
}

// newClient returns an HTTP client keeping an idle connection per client
// of the load, and returning redirects rather than following them: a 303
// is what a poll is measured to answer.
func newClient(clients int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{MaxIdleConns: 0, MaxIdleConnsPerHost: 2 * clients},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
		Timeout: time.Minute,
	}
}

// fetch sends req and reads the whole answer, which must have status want.
func fetch(client *http.Client, req *http.Request, want int) (*http.Response, []byte, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != want {
		return resp, body, fmt.Errorf("%s %s: status %d, want %d: %.200s", req.Method, req.URL.Path, resp.StatusCode, want, body)
	}
	return resp, body, nil
}

// get is fetch of a GET of rawURL.
func get(ctx context.Context, client *http.Client, rawURL string, want int) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, nil, err
	}
	return fetch(client, req, want)
}

// target is a URL that a load run GETs, expecting one status.
type target struct {
	name string
	url  string
	want int
	// settle, when set, waits until the work the target accepted during a
	// run is done: a closed loop's run lasts until then, and no run's work
	// spills into the next.
	settle func(ctx context.Context, accepted int) error
}

// measured is what load runs of one target measured.
type measured struct {
	target string
	loop   string // "closed, 16 clients" or "open, 2,000/s"
	load.Result
	allocated uint64 // bytes allocated during the runs, by server and client alike
}

// add adds the measures of m, a run of the same target and load.
func (r *measured) add(m measured) {
	r.target, r.loop = m.target, m.loop
	r.Result.Add(m.Result)
	r.allocated += m.allocated
}

func (r measured) allocatedPerRequest() float64 { return float64(r.allocated) / float64(r.Requests) }

// measure runs load against t for d: a closed loop of opts.clients when
// rate is 0, an open loop at rate otherwise. Any error fails the run: a
// fast wrong answer is not a result.
func (e *env) measure(ctx context.Context, t target, rate float64, d time.Duration) (measured, error) {
	clients := e.opts.clients
	cfg := load.Config{Concurrency: clients, Duration: d}
	loop := fmt.Sprintf("closed, %d clients", clients)
	if rate > 0 {
		// Enough senders that a slow answer delays the requests due after
		// it only if the server itself holds them up.
		cfg.Concurrency = 4 * clients
		cfg.Rate = rate
		loop = fmt.Sprintf("open, %s/s", count(int(rate)))
	}
	client := newClient(cfg.Concurrency)
	defer client.CloseIdleConnections()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	started := time.Now()
	res, err := load.Run(ctx, cfg, func(ctx context.Context, seq int) error {
		_, _, err := get(ctx, client, t.url, t.want)
		return err
	})
	runtime.ReadMemStats(&after)
	if err == nil && t.settle != nil {
		err = t.settle(ctx, res.Requests-res.Errors)
		if rate == 0 {
			// A closed loop lasts until the work it accepted is done: its
			// throughput is one the target sustains.
			res.Elapsed = time.Since(started)
		}
	}
	if err == nil && res.Errors > 0 {
		err = fmt.Errorf("%d of %d requests failed, the first with: %w", res.Errors, res.Requests, res.FirstError)
	}
	if err == nil && res.Requests == 0 {
		err = errors.New("no request was answered")
	}
	if err != nil {
		return measured{}, fmt.Errorf("%s (%s): %w", t.name, loop, err)
	}
	return measured{
		target: t.name, loop: loop, Result: res,
		allocated: after.TotalAlloc - before.TotalAlloc,
	}, nil
}

// pair measures baseline and subject for opts.duration each, at rate (0:
// in a closed loop), in opts.rounds turns: alternating in short runs, both
// meet the same disturbances from the rest of the machine, where one long
// run each would leave them to chance.
func (e *env) pair(ctx context.Context, baseline, subject target, rate float64) (base, subj measured, err error) {
	rounds := max(e.opts.rounds, 1)
	turn := e.opts.duration / time.Duration(rounds)
	for range rounds {
		for _, side := range []struct {
			t   target
			sum *measured
		}{{baseline, &base}, {subject, &subj}} {
			m, err := e.measure(ctx, side.t, rate, turn)
			if err != nil {
				return base, subj, err
			}
			side.sum.add(m)
		}
	}
	return base, subj, nil
}

// comparison is a subject to measure beside its baseline.
type comparison struct {
	subject, baseline target
	open              bool // also compare in an open loop
}

// compared is a comparison's closed-loop measures.
type compared struct{ subject, baseline measured }

// ratio is the subject's throughput over the baseline's.
func (c compared) ratio() float64 { return c.subject.Throughput() / c.baseline.Throughput() }

// compare measures each subject beside its baseline: both in a closed
// loop, then, when asked, both in an open loop at half the slower one's
// closed-loop throughput, a load either sustains, to compare latencies at
// equal load. It returns the table of every run, and the closed-loop
// measures by "subject vs baseline", for the ratios a scenario sums up.
func (e *env) compare(ctx context.Context, comparisons []comparison) (*table, map[string]compared, error) {
	tbl := &table{header: []string{"target", "load", "requests", "throughput", "p50", "p99", "p99.9", "max", "allocated per request", "vs baseline"}}
	closed := map[string]compared{}
	for _, c := range comparisons {
		base, subject, err := e.pair(ctx, c.baseline, c.subject, 0)
		if err != nil {
			return nil, nil, err
		}
		closed[c.subject.name+" vs "+c.baseline.name] = compared{subject, base}
		tbl.add(base, "baseline")
		tbl.add(subject, fmt.Sprintf("**%.2f×** %s's throughput", subject.Throughput()/base.Throughput(), c.baseline.name))
		if !c.open {
			continue
		}
		rate := min(subject.Throughput(), base.Throughput()) / 2
		base, subject, err = e.pair(ctx, c.baseline, c.subject, rate)
		if err != nil {
			return nil, nil, err
		}
		tbl.add(base, "baseline")
		tbl.add(subject, fmt.Sprintf("p99 %.2f× %s's", ratio(subject.Latency.Quantile(0.99), base.Latency.Quantile(0.99)), c.baseline.name))
	}
	return tbl, closed, nil
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// settleLimit bounds how long a target may take to finish the work it
// accepted during a run.
const settleLimit = 2 * time.Minute

// waitExecuted returns a target's settle: it waits until executed has
// counted every request accepted in the target's runs so far.
func waitExecuted(executed func() int64) func(ctx context.Context, accepted int) error {
	var total atomic.Int64
	return func(ctx context.Context, accepted int) error {
		want := total.Add(int64(accepted))
		deadline := time.Now().Add(settleLimit)
		ticker := time.NewTicker(5 * time.Millisecond)
		defer ticker.Stop()
		for executed() < want {
			if time.Now().After(deadline) {
				return fmt.Errorf("only %d of %d accepted operations executed after %v", executed(), want, settleLimit)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-ticker.C:
			}
		}
		return nil
	}
}

// stack collects what ends a scenario's servers, run in reverse order.
type stack []func()

func (s *stack) push(f func()) { *s = append(*s, f) }

func (s *stack) run() {
	for i := len(*s) - 1; i >= 0; i-- {
		(*s)[i]()
	}
}

// serveHandler serves h on a loopback server that stops closes.
func serveHandler(stops *stack, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	stops.push(srv.Close)
	return srv
}

// ratioGoal compares a subject's throughput with its baseline's.
func ratioGoal(what, target string, least float64, c compared) goal {
	r := c.ratio()
	return goal{what: what, target: target, measured: fmt.Sprintf("%.2f×", r), value: r, met: r >= least}
}

// plainTarget serves answer, as a plain handler writing the same bytes
// would, at path on a loopback server.
func plainTarget(stops *stack, path string, answer benchutil.Recorded) target {
	srv := serveHandler(stops, answer.Plain())
	return target{name: "plain", url: srv.URL + path, want: answer.Status}
}
