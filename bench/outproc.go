package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
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
	nats     string        // the NATS server (JetStream); empty leaves the publisher out
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
	// delivered, when set, waits until the deliveries of every operation
	// the target executed so far are made, once a round has executed them
	// all, and returns how long that took: no round's deliveries run
	// beside the next round.
	delivered func(context.Context) (time.Duration, error)
	procs     []*process // the processes serving it, which must stay up
}

// outRun is one wrk run of a target, and the wait for its execution.
type outRun struct {
	wrkResult
	throughput float64       // requests per second, execution included
	drained    time.Duration // the wait for deliveries after the execution
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
	run := outRun{wrkResult: res, throughput: float64(res.requests) / elapsed.Seconds()}
	if t.delivered != nil {
		if run.drained, err = t.delivered(ctx); err != nil {
			return outRun{}, fmt.Errorf("%s: %w", t.name, err)
		}
	}
	return run, nil
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
	{"notify-cost", outNotifyCost},
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
