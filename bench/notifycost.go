package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime/pprof"
	"slices"
	"sync/atomic"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/backendurl"
	"github.com/asyncreply/asyncreply/internal/benchutil"
	"github.com/asyncreply/asyncreply/notify/broker"
)

// notifyCostScenario: accepting and executing on SQLite with a route's
// webhook and a NATS JetStream publisher configured, beside the same
// without them, taking turns, every delivery counted at its destination
// before the next round.
func notifyCostScenario(ctx context.Context, e *env) (section, error) {
	s := section{
		title: "7. Webhooks and publishing",
		intro: `GET /reports/{id} accepted and executed on SQLite, as in Accept, with
deliveries ("notified": the route's notify webhook, signed with a webhook
secret, to a loopback receiver that verifies nothing and answers 204,
loopback allowed by Notify.AllowNetworks; and a publisher to a NATS
JetStream subject, in a stream of the scenario's own, in files) beside
the same without them ("none"), taking turns, none first in each round.
A run lasts until every operation it accepted is executed; then, before
the next run, the harness waits until every operation's event is at each
destination (the receiver's distinct events, the stream's messages):
"until delivered" counts that wait too. A delivery's lag runs from the
operation's completion (the event's time) to the receiver reading the
event, or the stream storing it. "Accept only" is the same pair
executing nothing (Config.AcceptOnly, as beside separate workers): the
202 alone, which stores the operation's targets and delivers nothing.
Deliveries run in the process that executes, beside the executions, on
the machine's two cores shared with everything else.`,
	}
	var stops stack
	defer stops.run()

	receiver := benchutil.NewReceiver()
	hook := serveHandler(&stops, receiver)
	destinations := map[string]func(context.Context) (int64, error){
		"the webhook receiver": func(context.Context) (int64, error) { return receiver.Received(), nil },
	}
	var publish []asyncreply.NamedSender
	var stream *benchStream
	if e.opts.nats == "" {
		s.notes = append(s.notes, "NATS was not configured (-nats): webhooks only, no publisher.")
	} else if st, err := openStream(ctx, e.opts.nats); err != nil {
		s.notes = append(s.notes, fmt.Sprintf("NATS was unreachable (%v): webhooks only, no publisher.", err))
	} else {
		stream = st
		stops.push(func() { stream.close() })
		pub, err := broker.Open(ctx, stream.publishURL)
		if err != nil {
			return s, err
		}
		stops.push(func() { pub.Close() })
		publish = []asyncreply.NamedSender{{Name: stream.publishURL, Sender: pub}}
		destinations["the stream"] = stream.stored
	}

	secret, err := webhookSecret()
	if err != nil {
		return s, err
	}
	k := kind{"sqlite", true}
	var plainExecuted, notifiedExecuted atomic.Int64
	notifyConfig := asyncreply.NotifyConfig{
		Secrets:       []string{secret},
		AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Publish:       publish,
	}
	hookURL := hook.URL + "/hooks/reports"
	noneSrv, err := e.serveNotify(ctx, &stops, k, false, asyncreply.NotifyConfig{}, reportsNotifying(&plainExecuted, ""))
	if err != nil {
		return s, err
	}
	notifiedSrv, err := e.serveNotify(ctx, &stops, k, false, notifyConfig, reportsNotifying(&notifiedExecuted, hookURL))
	if err != nil {
		return s, err
	}
	noneOnly, err := e.serveNotify(ctx, &stops, k, true, asyncreply.NotifyConfig{}, reportsNotifying(nil, ""))
	if err != nil {
		return s, err
	}
	notifiedOnly, err := e.serveNotify(ctx, &stops, k, true, notifyConfig, reportsNotifying(nil, hookURL))
	if err != nil {
		return s, err
	}
	none := target{name: "sqlite, none", url: noneSrv.URL + "/reports/7", want: http.StatusAccepted, settle: waitExecuted(plainExecuted.Load)}
	notified := target{name: "sqlite, notified", url: notifiedSrv.URL + "/reports/7", want: http.StatusAccepted, settle: waitExecuted(notifiedExecuted.Load)}
	noneOnlyT := target{name: "sqlite, accept only, none", url: noneOnly.URL + "/reports/7", want: http.StatusAccepted}
	notifiedOnlyT := target{name: "sqlite, accept only, notified", url: notifiedOnly.URL + "/reports/7", want: http.StatusAccepted}
	counts := countEach(destinations)

	rounds := max(e.opts.rounds, 1)
	turn := e.opts.duration / time.Duration(rounds)
	var base, subject measured
	var executedRatios, deliveredRatios, p50Ratios, p99Ratios []float64
	var drains []time.Duration
	accepted := int64(0)
	perRound := &table{header: []string{"round", "none", "notified", "vs none", "notified, until delivered", "vs none", "202 p99, notified vs none", "delivered after the last execution"}}
	for round := range rounds {
		stopProfile := e.profile("none", round)
		b, err := e.measure(ctx, none, 0, turn)
		stopProfile()
		if err != nil {
			return s, err
		}
		stopProfile = e.profile("notified", round)
		n, err := e.measure(ctx, notified, 0, turn)
		if err != nil {
			stopProfile()
			return s, err
		}
		accepted += int64(n.Requests - n.Errors)
		drain, err := waitDelivered(ctx, counts, accepted)
		stopProfile()
		if err != nil {
			return s, fmt.Errorf("round %d: %w", round+1, err)
		}
		untilDelivered := float64(n.Requests) / (n.Elapsed + drain).Seconds()
		executedRatios = append(executedRatios, n.Throughput()/b.Throughput())
		deliveredRatios = append(deliveredRatios, untilDelivered/b.Throughput())
		p50Ratios = append(p50Ratios, ratio(n.Latency.Quantile(0.5), b.Latency.Quantile(0.5)))
		p99Ratios = append(p99Ratios, ratio(n.Latency.Quantile(0.99), b.Latency.Quantile(0.99)))
		drains = append(drains, drain)
		perRound.rows = append(perRound.rows, []string{fmt.Sprint(round + 1),
			count(int(b.Throughput())) + "/s", count(int(n.Throughput())) + "/s", fmt.Sprintf("%.2f×", executedRatios[round]),
			count(int(untilDelivered)) + "/s", fmt.Sprintf("%.2f×", deliveredRatios[round]),
			fmt.Sprintf("%.2f×", p99Ratios[round]), ms(drain)})
		base.add(b)
		subject.add(n)
	}

	// The accept path alone, as a gateway beside separate workers: what
	// the 202 itself pays for the targets it stores.
	var onlyBase, onlySubject measured
	var onlyRatios, onlyP99Ratios []float64
	for range rounds {
		b, err := e.measure(ctx, noneOnlyT, 0, turn)
		if err != nil {
			return s, err
		}
		n, err := e.measure(ctx, notifiedOnlyT, 0, turn)
		if err != nil {
			return s, err
		}
		onlyRatios = append(onlyRatios, n.Throughput()/b.Throughput())
		onlyP99Ratios = append(onlyP99Ratios, ratio(n.Latency.Quantile(0.99), b.Latency.Quantile(0.99)))
		onlyBase.add(b)
		onlySubject.add(n)
	}

	tbl := &table{header: []string{"target", "load", "requests", "throughput", "p50", "p99", "p99.9", "max", "allocated per request", "vs baseline"}}
	tbl.add(base, "baseline")
	tbl.add(subject, fmt.Sprintf("**%s** none's throughput (rounds: %s); 202 p50 %s, p99 %s none's",
		ratioOf(executedRatios), spreadOf(executedRatios), ratioOf(p50Ratios), ratioOf(p99Ratios)))
	tbl.add(onlyBase, "baseline")
	tbl.add(onlySubject, fmt.Sprintf("**%s** none's throughput (rounds: %s); 202 p99 %s none's",
		ratioOf(onlyRatios), spreadOf(onlyRatios), ratioOf(onlyP99Ratios)))

	deliveries := &table{header: []string{"destination", "distinct events", "copies", "lag p50", "lag p99", "lag max"}}
	deliveries.rows = append(deliveries.rows, lagRow("webhook (route notify)", accepted, receiver.Stats()))
	s.measure("webhook lag, p50", float64(receiver.Stats().P50))
	if stream != nil {
		stored, err := stream.lags(ctx)
		if err != nil {
			return s, err
		}
		deliveries.rows = append(deliveries.rows, lagRow("NATS JetStream", accepted, stored.Stats()))
		s.measure("NATS lag, p50", float64(stored.Stats().P50))
	}
	s.tables = append(s.tables, tbl, perRound, deliveries)
	s.measure("accept and execute, notified vs none", median(executedRatios, same))
	s.measure("accept, execute and deliver, notified vs none", median(deliveredRatios, same))
	s.measure("accept only, notified vs none", median(onlyRatios, same))
	s.notes = append(s.notes, fmt.Sprintf(`With deliveries configured, SQLite accepted and executed at **%s** the
rate without them (the median of %d rounds' ratios; rounds %s), and at
%s (%s) counting until every event was at its destination; its 202s took
%s (p50) and %s (p99) as long. The last deliveries of a round came %s
after its last execution (median; at most %s). Accepting only, with
nothing executed or delivered, the 202s with targets to store came at
%s (%s) the rate of those without.`,
		ratioOf(executedRatios), rounds, spreadOf(executedRatios), ratioOf(deliveredRatios), spreadOf(deliveredRatios),
		ratioOf(p50Ratios), ratioOf(p99Ratios), ms(time.Duration(median(drains, func(d time.Duration) float64 { return float64(d) }))), ms(slices.Max(drains)),
		ratioOf(onlyRatios), spreadOf(onlyRatios)))
	return s, nil
}

func same(v float64) float64 { return v }

// ratioOf is the median of ratios, as "0.95×".
func ratioOf(ratios []float64) string { return fmt.Sprintf("%.2f×", median(ratios, same)) }

// spreadOf is the lowest and the highest of ratios, as "0.90–1.01×".
func spreadOf(ratios []float64) string {
	return fmt.Sprintf("%.2f–%.2f×", slices.Min(ratios), slices.Max(ratios))
}

// serveNotify serves app through asyncreply on a new backend of kind k,
// delivering as notify says, as serve does otherwise, or executing and
// delivering nothing when acceptOnly (the backend then unbounded, as
// what waits only piles up); stops stops it.
func (e *env) serveNotify(ctx context.Context, stops *stack, k kind, acceptOnly bool, notify asyncreply.NotifyConfig, app http.Handler) (*httptest.Server, error) {
	opts := backendurl.Options{}
	if acceptOnly {
		opts.MaxQueued = -1
	}
	be, err := e.openWith(ctx, k, opts)
	if err != nil {
		return nil, err
	}
	// Operations are kept long enough for their deliveries, which read
	// them, to be made as far behind as waitDelivered waits for them.
	cfg := asyncreply.Config{Backend: be, Retention: 2 * settleLimit, SweepInterval: 500 * time.Millisecond, Notify: notify, AcceptOnly: acceptOnly}
	if k.durable {
		cfg.Key = benchutil.Key
	}
	srv, stop, err := serveConfig(cfg, app)
	if err != nil {
		return nil, err
	}
	stops.push(stop)
	return srv, nil
}

// reportsNotifying is benchutil.Reports with the route's notify webhook
// set to notifyURL (none when empty): the same application, answering the
// same bytes, its operations delivered or not.
func reportsNotifying(executed *atomic.Int64, notifyURL string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.AsyncWith(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if executed != nil {
			executed.Add(1)
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "report "+r.PathValue("id"))
	}), asyncreply.RouteOptions{Notify: notifyURL}))
	return mux
}

// webhookSecret returns a new Standard Webhooks secret.
func webhookSecret() (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key), nil
}

// profile starts a CPU profile of side's run of round, to
// PREFIX-SIDE-ROUND.pprof when -cpuprofile gives a prefix, and returns
// what stops it. The profiles of a side's rounds are read together, as
// go tool pprof -top PREFIX-notified-*.pprof.
func (e *env) profile(side string, round int) (stop func()) {
	if e.opts.cpuProfile == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s-%s-%d.pprof", e.opts.cpuProfile, side, round+1))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: -cpuprofile: %v\n", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "bench: -cpuprofile: %v\n", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
