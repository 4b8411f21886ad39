package main

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/asyncreply/asyncreply/gateway"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// The out-of-process mode (-mode outproc) measures what a user would
// reproduce: the built asyncreply binary and each baseline, every server
// in a process of its own on a loopback port of its own, driven by wrk,
// an external load generator. A server sharing a Go runtime with another,
// or with the load generator, shares its scheduler and garbage collector:
// in-process numbers flatter whichever shares it.

// outprocOptions size an out-of-process run.
type outprocOptions struct {
	duration time.Duration // each wrk run's length, in whole seconds
	rounds   int           // turns a subject and its baseline take
	postgres string        // the PostgreSQL URL; empty leaves PostgreSQL out
}

// outprocFull are the sizes of the published results.
func outprocFull() outprocOptions { return outprocOptions{duration: 5 * time.Second, rounds: 5} }

// outprocSmoke run everything tiny, to show the mode works.
func outprocSmoke() outprocOptions { return outprocOptions{duration: time.Second, rounds: 1} }

// outEnv is what the out-of-process scenarios share.
type outEnv struct {
	*env
	opts outprocOptions
	bin  *binaries
	wrk  string
	http *http.Client
}

// outTarget is a server process wrk loads with one request.
type outTarget struct {
	name string
	req  wrkRequest
	// executed, when set, counts the operations the target executed so
	// far: a round lasts until it has executed every one it accepted, so
	// that its throughput is one it sustains.
	executed func(context.Context) (int64, error)
	procs    []*process // the processes serving it, which must stay up
}

// outRun is one wrk run of a target, and the wait for its execution.
type outRun struct {
	wrkResult
	throughput float64 // requests per second, execution included
}

// outMeasured is every round of one target.
type outMeasured struct {
	target string
	runs   []outRun
}

func (m outMeasured) requests() int {
	n := 0
	for _, r := range m.runs {
		n += r.requests
	}
	return n
}

func (m outMeasured) throughput() float64 {
	return median(m.runs, func(r outRun) float64 { return r.throughput })
}

func (m outMeasured) quantile(q float64) time.Duration {
	return time.Duration(median(m.runs, func(r outRun) float64 { return float64(r.latency[q]) }))
}

func (m outMeasured) max() time.Duration {
	var most time.Duration
	for _, r := range m.runs {
		most = max(most, r.max)
	}
	return most
}

// median is the median of f over runs (the mean of the middle two of an
// even number).
func median[T any](runs []T, f func(T) float64) float64 {
	if len(runs) == 0 {
		return 0
	}
	vs := make([]float64, len(runs))
	for i, r := range runs {
		vs[i] = f(r)
	}
	slices.Sort(vs)
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2
	}
	return vs[len(vs)/2]
}

// outCompared is a subject beside its baseline, round by round.
type outCompared struct {
	subject, baseline outMeasured
	hasBaseline       bool
}

// ratios are the subject's throughput over the baseline's, round by round.
func (c outCompared) ratios() []float64 {
	var rs []float64
	for i := range c.subject.runs {
		rs = append(rs, c.subject.runs[i].throughput/c.baseline.runs[i].throughput)
	}
	return rs
}

func (c outCompared) ratio() float64 {
	return median(c.ratios(), func(r float64) float64 { return r })
}

// spread is the lowest and the highest round's ratio.
func (c outCompared) spread() (lo, hi float64) {
	rs := c.ratios()
	return slices.Min(rs), slices.Max(rs)
}

// measureOut runs wrk against t once, then waits until t has executed
// what it accepted.
func (o *outEnv) measureOut(ctx context.Context, t outTarget) (outRun, error) {
	for _, p := range t.procs {
		if err := p.alive(); err != nil {
			return outRun{}, fmt.Errorf("%s: %w", t.name, err)
		}
	}
	var before int64
	if t.executed != nil {
		var err error
		if before, err = t.executed(ctx); err != nil {
			return outRun{}, fmt.Errorf("%s: %w", t.name, err)
		}
	}
	res, err := runWrk(ctx, o.wrk, o.dir, t.req, o.opts.duration)
	if err != nil {
		return outRun{}, fmt.Errorf("%s: %w", t.name, err)
	}
	elapsed := res.elapsed
	if t.executed != nil {
		settled := time.Now()
		if err := waitCount(ctx, t.executed, before+int64(res.requests)); err != nil {
			return outRun{}, fmt.Errorf("%s: %w", t.name, err)
		}
		elapsed += time.Since(settled)
	}
	return outRun{wrkResult: res, throughput: float64(res.requests) / elapsed.Seconds()}, nil
}

// waitCount waits until count reaches want, for at most settleLimit.
func waitCount(ctx context.Context, count func(context.Context) (int64, error), want int64) error {
	deadline := time.Now().Add(settleLimit)
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for {
		n, err := count(ctx)
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d accepted operations executed after %v", n, want, settleLimit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// compareOut measures subject and, when given, baseline, alternating over
// the rounds, the baseline first in each.
func (o *outEnv) compareOut(ctx context.Context, subject outTarget, baseline *outTarget) (outCompared, error) {
	c := outCompared{subject: outMeasured{target: subject.name}, hasBaseline: baseline != nil}
	if baseline != nil {
		c.baseline.target = baseline.name
	}
	for range max(o.opts.rounds, 1) {
		if baseline != nil {
			r, err := o.measureOut(ctx, *baseline)
			if err != nil {
				return c, err
			}
			c.baseline.runs = append(c.baseline.runs, r)
		}
		r, err := o.measureOut(ctx, subject)
		if err != nil {
			return c, err
		}
		c.subject.runs = append(c.subject.runs, r)
	}
	return c, nil
}

// outTable is compareOut's results in the harness's table style.
func outTable() *table {
	return &table{header: []string{"target", "load", "requests", "throughput", "p50", "p99", "max", "vs baseline"}}
}

func (o *outEnv) addRows(t *table, c outCompared) {
	row := func(m outMeasured, versus string) []string {
		return []string{m.target, wrkLoad, count(m.requests()), count(int(m.throughput())) + "/s",
			ms(m.quantile(0.50)), ms(m.quantile(0.99)), ms(m.max()), versus}
	}
	t.outRuns = append(append(t.outRuns, c.subject.runs...), c.baseline.runs...)
	if !c.hasBaseline {
		t.rows = append(t.rows, row(c.subject, "no baseline"))
		return
	}
	lo, hi := c.spread()
	t.rows = append(t.rows,
		row(c.baseline, "baseline"),
		row(c.subject, fmt.Sprintf("**%.2f×** %s's throughput (rounds: %.2f–%.2f×)", c.ratio(), c.baseline.target, lo, hi)))
}

// outGoal compares a subject's median throughput with its baseline's.
func outGoal(what, target string, least float64, c outCompared) goal {
	r := c.ratio()
	lo, hi := c.spread()
	return goal{what: what, target: target, measured: fmt.Sprintf("%.2f× (%.2f–%.2f×)", r, lo, hi), value: r, met: r >= least}
}

// outScenario is one out-of-process comparison, named for -scenarios.
type outScenario struct {
	name string
	run  func(context.Context, *outEnv) (section, error)
}

var outScenarios = []outScenario{
	{"pass-through", outPassThrough},
	{"accept", outAccept},
	{"execute", outExecute},
	{"poll", outPoll},
}

func outScenarioNames() []string {
	var names []string
	for _, s := range outScenarios {
		names = append(names, s.name)
	}
	return names
}

// runOutproc runs the out-of-process scenarios names, and returns their
// sections and the generated results.
func runOutproc(ctx context.Context, opts outprocOptions, names []string, command string, progress io.Writer) ([]section, []byte, error) {
	for _, name := range names {
		if !slices.Contains(outScenarioNames(), name) {
			return nil, nil, fmt.Errorf("unknown out-of-process scenario %q: choose among %s", name, strings.Join(outScenarioNames(), ", "))
		}
	}
	started := time.Now()
	wrk, err := ensureWrk(ctx, progress)
	if err != nil {
		return nil, nil, err
	}
	e, err := newEnv(ctx, options{postgres: opts.postgres})
	if err != nil && opts.postgres != "" {
		fmt.Fprintf(progress, "bench: leaving PostgreSQL out: %v\n", err)
		opts.postgres = ""
		e, err = newEnv(ctx, options{})
	}
	if err != nil {
		return nil, nil, err
	}
	defer e.close()
	fmt.Fprintln(progress, "bench: building asyncreply and the baselines…")
	bin, err := buildBinaries(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer bin.remove()
	o := &outEnv{env: e, opts: opts, bin: bin, wrk: wrk, http: newClient(1)}
	defer o.http.CloseIdleConnections()

	var sections []section
	for _, sc := range outScenarios {
		if !slices.Contains(names, sc.name) {
			continue
		}
		begun := time.Now()
		fmt.Fprintf(progress, "bench: %s (out of process)…\n", sc.name)
		s, err := sc.run(ctx, o)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", sc.name, err)
		}
		fmt.Fprintf(progress, "bench: %s done in %v\n", sc.name, time.Since(begun).Round(time.Millisecond))
		sections = append(sections, s)
	}
	generated := outResults(sections, machine(ctx, e), strings.TrimSpace(command), opts, started, time.Since(started))
	return sections, generated, errors.Join(e.close(), bin.remove())
}

// upstream starts the application behind the gateway and the proxy.
func (o *outEnv) upstream(ctx context.Context, ps *processes) (*process, error) {
	return ps.start(ctx, "upstream", o.bin.baseline, nil, "/healthz", "-listen", "-role", "upstream")
}

// gateway starts the asyncreply gateway in front of upstream, on
// backendURL, with args added to its flags.
func (o *outEnv) gateway(ctx context.Context, ps *processes, name string, upstream *process, backendURL string, args ...string) (*process, error) {
	env := []string{"ASYNCREPLY_KEY=" + hex.EncodeToString(benchutil.Key)} // encryption at rest, as in production
	args = append([]string{"--upstream", upstream.url, "--backend", backendURL}, args...)
	return ps.start(ctx, name, o.bin.asyncreply, env, "/operations/healthz", "--listen", append([]string{"gateway"}, args...)...)
}

// plain starts a process writing answer whatever the request.
func (o *outEnv) plain(ctx context.Context, ps *processes, answer benchutil.Recorded) (*process, error) {
	b, err := json.Marshal(answer)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(o.dir, "answer-*.json")
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return ps.start(ctx, "plain", o.bin.baseline, nil, "/healthz", "-listen", "-role", "plain", "-answer", f.Name())
}

// executedAt returns a target's executed: GET of rawURL, a count.
func (o *outEnv) executedAt(rawURL string) func(context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		_, body, err := get(ctx, o.http, rawURL, http.StatusOK)
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(strings.TrimSpace(string(body)), 10, 64)
	}
}

// capture records the answer to req, for a plain process to write.
func (o *outEnv) capture(ctx context.Context, req wrkRequest, want int) (benchutil.Recorded, error) {
	r, err := http.NewRequestWithContext(ctx, cmp.Or(req.method, http.MethodGet), req.url, strings.NewReader(req.body))
	if err != nil {
		return benchutil.Recorded{}, err
	}
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	resp, body, err := fetch(o.http, r, want)
	if err != nil {
		return benchutil.Recorded{}, err
	}
	header := resp.Header.Clone()
	// The server sets these itself; the others are the answer's own.
	for _, k := range []string{"Date", "Content-Length", "Connection"} {
		header.Del(k)
	}
	return benchutil.Recorded{Status: resp.StatusCode, Header: header, Body: body}, nil
}

// passThroughBody is the body of the pass-through POST: the gateway keeps
// a copy of it while it streams, for the application's deferral handshake.
var passThroughBody = `{"report":"quarterly","rows":[` + strings.Repeat(`{"id":12345,"name":"a row of the report"},`, 24) + `{"id":0}]}`

func outPassThrough(ctx context.Context, o *outEnv) (section, error) {
	s := section{
		title: "Gateway pass-through",
		intro: fmt.Sprintf(`An upstream process answers GET and POST /fast at once with a short body.
"ReverseProxy" is a process running httputil.ReverseProxy alone, its
transport keeping as many idle connections to the upstream as the
gateway's. The gateway (memory backend, an asynchronous route that is not
requested) forwards /fast unchanged, every request marked deferrable and
its body kept while it streams, for the application's deferral handshake:
the POST carries a %d-byte JSON body.`, len(passThroughBody)),
	}
	var ps processes
	defer ps.stop()
	up, err := o.upstream(ctx, &ps)
	if err != nil {
		return s, err
	}
	gw, err := o.gateway(ctx, &ps, "gateway", up, "memory:", "--async", "GET /slow/{id}")
	if err != nil {
		return s, err
	}
	proxy, err := ps.start(ctx, "ReverseProxy", o.bin.baseline, nil, "/healthz", "-listen", "-role", "proxy", "-upstream", up.url)
	if err != nil {
		return s, err
	}
	tbl := outTable()
	post := wrkRequest{method: http.MethodPost, body: passThroughBody, header: map[string]string{"Content-Type": "application/json"}}
	for _, c := range []struct {
		what string
		req  wrkRequest
	}{{"GET", wrkRequest{}}, {"POST", post}} {
		subject, baseline := c.req, c.req
		subject.url, baseline.url = gw.url+"/fast", proxy.url+"/fast"
		compared, err := o.compareOut(ctx,
			outTarget{name: "gateway, " + c.what, req: subject, procs: []*process{gw, up}},
			&outTarget{name: "ReverseProxy, " + c.what, req: baseline, procs: []*process{proxy, up}})
		if err != nil {
			return s, err
		}
		o.addRows(tbl, compared)
		s.goals = append(s.goals, outGoal("gateway pass-through, "+c.what+", vs tuned ReverseProxy, out of process (throughput)", "≥ 0.95×", 0.95, compared))
	}
	s.tables = append(s.tables, tbl)
	return s, ps.stop()
}

// acceptRequest is the request an asynchronous route accepts.
func acceptRequest(base string) wrkRequest {
	return wrkRequest{url: base + "/slow/7", header: map[string]string{"Prefer": "respond-async"}}
}

// acceptArgs are an accepting gateway's flags: finished operations are
// kept briefly, so that a long run holds a steady number of them.
var acceptArgs = []string{"--async", "GET /slow/{id}", "--retention", briefRetention.String()}

func outAccept(ctx context.Context, o *outEnv) (section, error) {
	s := section{
		title: "Accept (202), memory",
		intro: `GET /slow/{id} with Prefer: respond-async, an asynchronous route of the
gateway (memory backend, no bound on what waits), answers 202 and a
monitor URL; each operation is replayed to the upstream process, and a
round lasts until all are, so that its throughput includes the whole
cost of each operation. "plain" is a process writing the same 202 (the
headers and body captured from the gateway's own answer).`,
	}
	var ps processes
	defer ps.stop()
	up, err := o.upstream(ctx, &ps)
	if err != nil {
		return s, err
	}
	gw, err := o.gateway(ctx, &ps, "gateway", up, "memory:", append(slices.Clone(acceptArgs), "--max-queued", "-1")...)
	if err != nil {
		return s, err
	}
	answer, err := o.capture(ctx, acceptRequest(gw.url), http.StatusAccepted)
	if err != nil {
		return s, err
	}
	plain, err := o.plain(ctx, &ps, answer)
	if err != nil {
		return s, err
	}
	compared, err := o.compareOut(ctx,
		outTarget{name: "gateway, accept", req: acceptRequest(gw.url), executed: o.executedAt(up.url + "/executed"), procs: []*process{gw, up}},
		&outTarget{name: "plain", req: acceptRequest(plain.url), procs: []*process{plain}})
	if err != nil {
		return s, err
	}
	tbl := outTable()
	o.addRows(tbl, compared)
	s.tables = append(s.tables, tbl)
	s.goals = append(s.goals, outGoal("accept, memory, vs plain, out of process (throughput)", "≥ 0.7×", 0.7, compared))
	return s, ps.stop()
}

// durableConcurrency is the operations a durable gateway executes at once
// here: River by hand's workers, and the durable backends' own default.
// The gateway's default, gateway.DefaultConcurrency, leaves room for the
// upstream's synchronous routes, and at it River, fetching at most that
// many jobs every 100 ms (its fetch cooldown), executes about 40
// operations a second, whatever the backend.
const durableConcurrency = 100

func outExecute(ctx context.Context, o *outEnv) (section, error) {
	s := section{
		title: "Accept and execute, durable backends",
		intro: `The gateway on SQLite (the embedded default, one file) and on PostgreSQL,
encrypting at rest, accepting GET /slow/{id} with Prefer: respond-async
and replaying each operation to the upstream process, %d at once: the rate at which
operations are accepted and executed (a round lasts until every one
accepted is), and the latencies of the 202s. On PostgreSQL beside "River
by hand", a process inserting a row and a River job in one transaction
and answering 202, its worker storing a result in the row. SQLite has no
such baseline: its absolute numbers are reported. At the gateway's default
--concurrency, %d, execution is capped near %d a second on either backend
(River fetches at most that many jobs every 100 ms).`,
	}
	s.intro = fmt.Sprintf(s.intro, durableConcurrency, gateway.DefaultConcurrency, gateway.DefaultConcurrency*10)
	var ps processes
	defer ps.stop()
	up, err := o.upstream(ctx, &ps)
	if err != nil {
		return s, err
	}
	tbl := outTable()
	executed := o.executedAt(up.url + "/executed")
	durableArgs := append(slices.Clone(acceptArgs), "--concurrency", strconv.Itoa(durableConcurrency))

	sqliteGW, err := o.gateway(ctx, &ps, "gateway, SQLite", up, "sqlite://"+filepath.ToSlash(filepath.Join(o.dir, "outproc.db")), durableArgs...)
	if err != nil {
		return s, err
	}
	compared, err := o.compareOut(ctx, outTarget{name: "gateway, SQLite", req: acceptRequest(sqliteGW.url), executed: executed, procs: []*process{sqliteGW, up}}, nil)
	if err != nil {
		return s, err
	}
	o.addRows(tbl, compared)
	s.measure("SQLite, accepted and executed per second", compared.subject.throughput())
	if err := sqliteGW.stop(); err != nil {
		return s, err
	}

	if o.admin != nil {
		pgURL, err := url.Parse(withPoolSize(o.env.opts.postgres))
		if err != nil {
			return s, err
		}
		q := pgURL.Query()
		q.Set("schema", o.schema())
		pgURL.RawQuery = q.Encode()
		pgGW, err := o.gateway(ctx, &ps, "gateway, PostgreSQL", up, pgURL.String(), durableArgs...)
		if err != nil {
			return s, err
		}
		river, err := ps.start(ctx, "River by hand", o.bin.baseline, nil, "/healthz", "-listen",
			"-role", "river", "-postgres", withPoolSize(o.env.opts.postgres), "-schema", o.schema())
		if err != nil {
			return s, err
		}
		compared, err := o.compareOut(ctx,
			outTarget{name: "gateway, PostgreSQL", req: acceptRequest(pgGW.url), executed: executed, procs: []*process{pgGW, up}},
			&outTarget{name: "River by hand", req: acceptRequest(river.url), executed: o.executedAt(river.url + "/executed"), procs: []*process{river}})
		if err != nil {
			return s, err
		}
		o.addRows(tbl, compared)
		s.goals = append(s.goals, outGoal("accept, PostgreSQL, vs River by hand, both executing, out of process (throughput)", "≥ 1.0×", 1, compared))
	}
	s.tables = append(s.tables, tbl)
	return s, ps.stop()
}

func outPoll(ctx context.Context, o *outEnv) (section, error) {
	s := section{
		title: "Poll a finished operation, memory",
		intro: `GET of the monitor URL of a finished operation answers 303 See Other to
its response (memory backend). "plain" is a process writing the same 303
(captured from the gateway's answer).`,
	}
	var ps processes
	defer ps.stop()
	up, err := o.upstream(ctx, &ps)
	if err != nil {
		return s, err
	}
	gw, err := o.gateway(ctx, &ps, "gateway", up, "memory:", "--async", "GET /slow/{id}", "--retention", longRetention.String())
	if err != nil {
		return s, err
	}
	monitor, err := finishedOperation(ctx, o.http, gw.url+"/slow/7")
	if err != nil {
		return s, err
	}
	answer, err := o.capture(ctx, wrkRequest{url: monitor}, http.StatusSeeOther)
	if err != nil {
		return s, err
	}
	plain, err := o.plain(ctx, &ps, answer)
	if err != nil {
		return s, err
	}
	monitorURL, err := url.Parse(monitor)
	if err != nil {
		return s, err
	}
	compared, err := o.compareOut(ctx,
		outTarget{name: "gateway, poll", req: wrkRequest{url: monitor}, procs: []*process{gw}},
		&outTarget{name: "plain", req: wrkRequest{url: plain.url + monitorURL.Path}, procs: []*process{plain}})
	if err != nil {
		return s, err
	}
	tbl := outTable()
	o.addRows(tbl, compared)
	s.tables = append(s.tables, tbl)
	s.goals = append(s.goals, outGoal("poll a finished operation, memory, vs plain, out of process (throughput)", "≥ 0.8×", 0.8, compared))
	return s, ps.stop()
}
