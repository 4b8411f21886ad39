package main

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/asyncreply/asyncreply/gateway"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// The out-of-process scenarios: each starts its server processes, measures
// them with compareOut, and stops them.

// upstream starts the application behind the gateway and the proxy.
func (o *outEnv) upstream(ctx context.Context, ps *processes) (*process, error) {
	return ps.start(ctx, "upstream", o.bin.baseline, nil, "/healthz", "-listen", "-role", "upstream")
}

// gateway starts the asyncreply gateway in front of upstream, on
// backendURL, with args added to its flags.
func (o *outEnv) gateway(ctx context.Context, ps *processes, name string, upstream *process, backendURL string, args ...string) (*process, error) {
	return o.gatewayEnv(ctx, ps, name, nil, upstream, backendURL, args...)
}

// gatewayEnv is gateway with environment variables added to its own.
func (o *outEnv) gatewayEnv(ctx context.Context, ps *processes, name string, env []string, upstream *process, backendURL string, args ...string) (*process, error) {
	env = append([]string{"ASYNCREPLY_KEY=" + hex.EncodeToString(benchutil.Key)}, env...) // encryption at rest, as in production
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

// countAt returns a count a server process serves at rawURL: a target's
// executed, or the upstream's deferrable.
func (o *outEnv) countAt(rawURL string) func(context.Context) (int64, error) {
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
	gatewayRequests := 0 // counted by wrk
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
		gatewayRequests += compared.subject.requests()
		o.addRows(tbl, compared)
		s.goals = append(s.goals, outGoal("gateway pass-through, "+c.what+", vs tuned ReverseProxy, out of process (throughput)", "≥ 0.95×", 0.95, compared))
	}
	// What was measured is the pass-through with the deferral handshake
	// on: the upstream saw the gateway's requests marked deferrable.
	deferrable, err := o.countAt(up.url + "/deferrable")(ctx)
	if err != nil {
		return s, err
	}
	if deferrable < int64(gatewayRequests) {
		return s, fmt.Errorf("the upstream saw %d requests marked %s of the gateway's %d: the deferral handshake was off", deferrable, gateway.DeferrableHeader, gatewayRequests)
	}
	s.tables = append(s.tables, tbl)
	return s, ps.stop()
}

// acceptRequest is the request an asynchronous route accepts.
func acceptRequest(base string) wrkRequest {
	return wrkRequest{url: base + "/slow/7", header: map[string]string{"Prefer": "respond-async"}}
}

// executeConcurrency is the operations an accepting gateway executes at
// once here: River by hand's workers, and every backend's own default.
// The gateway's default, gateway.DefaultConcurrency, leaves room for the
// upstream's synchronous routes; at it, River, fetching at most that many
// jobs every 100 ms (its fetch cooldown), executes about 40 operations a
// second on SQLite and PostgreSQL alike, and memory executes a quarter of
// what it accepts from 64 connections.
const executeConcurrency = 100

// acceptArgs are an accepting gateway's flags: finished operations are
// kept briefly, so that a long run holds a steady number of them.
var acceptArgs = []string{"--async", "GET /slow/{id}", "--retention", briefRetention.String(),
	"--concurrency", strconv.Itoa(executeConcurrency)}

func outAccept(ctx context.Context, o *outEnv) (section, error) {
	s := section{
		title: "Accept (202), memory",
		intro: `GET /slow/{id} with Prefer: respond-async, an asynchronous route of the
gateway (memory backend, no bound on what waits), answers 202 and a
monitor URL; each operation is replayed to the upstream process, %d at
once, and a round lasts until all are, so that its throughput includes
the whole cost of each operation. "plain" is a process writing the same
202 (the headers and body captured from the gateway's own answer). Each
replay is a request the gateway forwards to the upstream, as it does a
pass-through: the whole cost of an operation is an accept and a
pass-through, where plain writes its 202 from memory. At the gateway's
default --concurrency, %d, replays fall further behind accepts.`,
	}
	s.intro = fmt.Sprintf(s.intro, executeConcurrency, gateway.DefaultConcurrency)
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
		outTarget{name: "gateway, accept", req: acceptRequest(gw.url), executed: o.countAt(up.url + "/executed"), procs: []*process{gw, up}},
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
such baseline: its absolute numbers are reported. "Accept only" is the
gateway with --accept-only, as beside separate workers, and River by hand
with no worker: the accept path alone. At the gateway's default
--concurrency, %d, execution is capped near %d a second on either backend
(River fetches at most that many jobs every 100 ms).`,
	}
	s.intro = fmt.Sprintf(s.intro, executeConcurrency, gateway.DefaultConcurrency, gateway.DefaultConcurrency*10)
	var ps processes
	defer ps.stop()
	up, err := o.upstream(ctx, &ps)
	if err != nil {
		return s, err
	}
	tbl := outTable()
	executed := o.countAt(up.url + "/executed")

	sqliteGW, err := o.gateway(ctx, &ps, "gateway, SQLite", up, "sqlite://"+filepath.ToSlash(filepath.Join(o.dir, "outproc.db")), acceptArgs...)
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
		if err := outPostgres(ctx, o, &ps, &s, tbl, up); err != nil {
			return s, err
		}
	}
	s.tables = append(s.tables, tbl)
	return s, ps.stop()
}

// outPostgres measures the gateway on PostgreSQL beside River by hand,
// both executing, then both accepting only, as beside separate workers.
func outPostgres(ctx context.Context, o *outEnv, ps *processes, s *section, tbl *table, up *process) error {
	for _, executing := range []bool{true, false} {
		pgURL, err := url.Parse(withPoolSize(o.env.opts.postgres))
		if err != nil {
			return err
		}
		q := pgURL.Query()
		q.Set("schema", o.schema())
		pgURL.RawQuery = q.Encode()
		name, args, riverArgs := "PostgreSQL", acceptArgs, []string{}
		if !executing {
			name, args, riverArgs = "PostgreSQL, accept only", append(slices.Clone(acceptArgs), "--accept-only"), []string{"-execute=false"}
		}
		gw, err := o.gateway(ctx, ps, "gateway, "+name, up, pgURL.String(), args...)
		if err != nil {
			return err
		}
		river, err := ps.start(ctx, "River by hand", o.bin.baseline, nil, "/healthz", "-listen",
			append([]string{"-role", "river", "-postgres", withPoolSize(o.env.opts.postgres), "-schema", o.schema()}, riverArgs...)...)
		if err != nil {
			return err
		}
		subject := outTarget{name: "gateway, " + name, req: acceptRequest(gw.url), procs: []*process{gw, up}}
		baseline := outTarget{name: "River by hand", req: acceptRequest(river.url), procs: []*process{river}}
		if executing {
			subject.executed = o.countAt(up.url + "/executed")
			baseline.executed = o.countAt(river.url + "/executed")
		} else {
			baseline.name += ", accept only"
		}
		compared, err := o.compareOut(ctx, subject, &baseline)
		if err != nil {
			return err
		}
		o.addRows(tbl, compared)
		if executing {
			s.goals = append(s.goals, outGoal("accept, PostgreSQL, vs River by hand, both executing, out of process (throughput)", "≥ 1.0×", 1, compared))
		} else {
			s.goals = append(s.goals, outGoal("accept only, PostgreSQL, vs River by hand, accept only, out of process (throughput)", "≥ 1.0× (stretch ≥ 2×)", 1, compared))
		}
		// Stopped before the next pair starts, so that neither's leftovers
		// run beside it.
		if err := errors.Join(gw.stop(), river.stop()); err != nil {
			return err
		}
	}
	return nil
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
