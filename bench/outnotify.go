package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// notifyRetention is how long the notify-cost gateways keep finished
// operations: longer than waitDelivered waits for their deliveries, which
// read them.
const notifyRetention = 2 * settleLimit

func outNotifyCost(ctx context.Context, o *outEnv) (section, error) {
	s := section{
		title: "Webhooks and publishing, SQLite",
		intro: fmt.Sprintf(`The gateway on SQLite accepting GET /slow/{id} with Prefer: respond-async
and replaying each operation to an upstream process, %d at once, as in
"Accept and execute", with deliveries ("notified": the route's notify:
webhook, in the config file, to a receiver process that verifies nothing
and answers 204, --webhook-secret from ASYNCREPLY_WEBHOOK_SECRET,
--webhook-allow-network 127.0.0.0/8; and --publish to a NATS JetStream
subject, in a stream of the scenario's own, in files) beside the same
gateway without them ("none"), each with an upstream of its own, taking
turns, none first in each round. A round lasts until every operation it
accepted is executed; then, before the next, the harness waits until
every executed operation's event is at each destination (the receiver's
distinct events, the stream's messages): "until delivered" counts that
wait too. A delivery's lag runs from the operation's completion (the
event's time) to the receiver reading the event, or the stream storing
it. "Accept only" is the same pair with --accept-only: the 202 alone.`, executeConcurrency),
	}
	var ps processes
	defer ps.stop()

	recv, err := ps.start(ctx, "receiver", o.bin.baseline, nil, "/healthz", "-listen", "-role", "receiver")
	if err != nil {
		return s, err
	}
	destinations := map[string]func(context.Context) (int64, error){"the webhook receiver": o.countAt(recv.url + "/received")}
	var publish []string
	var stream *benchStream
	if o.opts.nats == "" {
		s.notes = append(s.notes, "NATS was not configured (-nats): webhooks only, no publisher.")
	} else if st, err := openStream(ctx, o.opts.nats); err != nil {
		s.notes = append(s.notes, fmt.Sprintf("NATS was unreachable (%v): webhooks only, no publisher.", err))
	} else {
		stream = st
		defer stream.close()
		publish = []string{"--publish", stream.publishURL}
		destinations["the stream"] = stream.stored
	}
	secret, err := webhookSecret()
	if err != nil {
		return s, err
	}
	// The route, and its webhook, are in a config file, as an operator
	// sets a route's notify:.
	routes := func(name, notify string) (string, error) {
		route := "async:\n  - pattern: GET /slow/{id}\n"
		if notify != "" {
			route += "    notify: " + notify + "\n"
		}
		path := filepath.Join(o.dir, name+".yaml")
		return path, os.WriteFile(path, []byte(route), 0o600)
	}
	noneConfig, err := routes("none", "")
	if err != nil {
		return s, err
	}
	notifiedConfig, err := routes("notified", recv.url+"/hooks/slow")
	if err != nil {
		return s, err
	}
	common := []string{"--retention", notifyRetention.String(), "--concurrency", strconv.Itoa(executeConcurrency)}
	notifyArgs := append([]string{"--webhook-allow-network", "127.0.0.0/8"}, publish...)
	notifyEnv := []string{"ASYNCREPLY_WEBHOOK_SECRET=" + secret}
	db := func(name string) string { return "sqlite://" + filepath.ToSlash(filepath.Join(o.dir, name+".db")) }

	tbl := outTable()
	upNone, err := o.upstream(ctx, &ps)
	if err != nil {
		return s, err
	}
	upNotified, err := o.upstream(ctx, &ps)
	if err != nil {
		return s, err
	}
	none, err := o.gateway(ctx, &ps, "gateway, SQLite, none", upNone, db("none"), append([]string{"--config", noneConfig}, common...)...)
	if err != nil {
		return s, err
	}
	notified, err := o.gatewayEnv(ctx, &ps, "gateway, SQLite, notified", notifyEnv, upNotified, db("notified"),
		slices.Concat([]string{"--config", notifiedConfig}, common, notifyArgs)...)
	if err != nil {
		return s, err
	}
	executed := o.countAt(upNotified.url + "/executed")
	counts := countEach(destinations)
	// Every operation the notified gateway executed, counted by its own
	// upstream: the events each destination must hold.
	deliveredAll := func(ctx context.Context) (time.Duration, error) {
		want, err := executed(ctx)
		if err != nil {
			return 0, err
		}
		return waitDelivered(ctx, counts, want)
	}
	compared, err := o.compareOut(ctx,
		outTarget{name: "gateway, SQLite, notified", req: acceptRequest(notified.url), executed: executed, delivered: deliveredAll,
			procs: []*process{notified, upNotified, recv}},
		&outTarget{name: "gateway, SQLite, none", req: acceptRequest(none.url), executed: o.countAt(upNone.url + "/executed"),
			procs: []*process{none, upNone}})
	if err != nil {
		return s, err
	}
	// Operations answered after wrk stopped counting are executed, and
	// delivered, by now.
	if _, err := deliveredAll(ctx); err != nil {
		return s, err
	}
	o.addRows(tbl, compared)
	// Stopped before the accept-only pair starts, so that neither's
	// leftovers run beside it.
	if err := errors.Join(none.stop(), notified.stop()); err != nil {
		return s, err
	}

	perRound := &table{header: []string{"round", "none", "notified", "vs none", "notified, until delivered", "vs none", "delivered after the last execution"}}
	var untilDelivered []float64
	var drains []time.Duration
	for i, n := range compared.subject.runs {
		drains = append(drains, n.drained)
		b := compared.baseline.runs[i]
		until := float64(n.requests) / (float64(n.requests)/n.throughput + n.drained.Seconds())
		untilDelivered = append(untilDelivered, until/b.throughput)
		perRound.rows = append(perRound.rows, []string{strconv.Itoa(i + 1), count(int(b.throughput)) + "/s", count(int(n.throughput)) + "/s",
			fmt.Sprintf("%.2f×", n.throughput/b.throughput), count(int(until)) + "/s", fmt.Sprintf("%.2f×", until/b.throughput), ms(n.drained)})
	}

	// The 202 alone: the same pair accepting only.
	noneOnly, err := o.gateway(ctx, &ps, "gateway, SQLite, accept only, none", upNone, db("none-accept-only"),
		slices.Concat([]string{"--config", noneConfig, "--accept-only", "--max-queued", "-1"}, common)...)
	if err != nil {
		return s, err
	}
	notifiedOnly, err := o.gatewayEnv(ctx, &ps, "gateway, SQLite, accept only, notified", notifyEnv, upNotified, db("notified-accept-only"),
		slices.Concat([]string{"--config", notifiedConfig, "--accept-only", "--max-queued", "-1"}, common, notifyArgs)...)
	if err != nil {
		return s, err
	}
	only, err := o.compareOut(ctx,
		outTarget{name: "gateway, SQLite, accept only, notified", req: acceptRequest(notifiedOnly.url), procs: []*process{notifiedOnly}},
		&outTarget{name: "gateway, SQLite, accept only, none", req: acceptRequest(noneOnly.url), procs: []*process{noneOnly}})
	if err != nil {
		return s, err
	}
	o.addRows(tbl, only)

	deliveries := &table{header: []string{"destination", "distinct events", "copies", "lag p50", "lag p99", "lag max"}}
	total, err := executed(ctx)
	if err != nil {
		return s, err
	}
	var hook benchutil.ReceiverStats
	_, body, err := get(ctx, o.http, recv.url+"/stats", http.StatusOK)
	if err == nil {
		err = json.Unmarshal(body, &hook)
	}
	if err != nil {
		return s, fmt.Errorf("the receiver's stats: %w", err)
	}
	deliveries.rows = append(deliveries.rows, lagRow("webhook (route notify)", total, hook))
	s.measure("webhook lag, p50, out of process", float64(hook.P50))
	if stream != nil {
		stored, err := stream.lags(ctx)
		if err != nil {
			return s, err
		}
		deliveries.rows = append(deliveries.rows, lagRow("NATS JetStream", total, stored.Stats()))
		s.measure("NATS lag, p50, out of process", float64(stored.Stats().P50))
	}
	s.tables = append(s.tables, tbl, perRound, deliveries)
	lo, hi := compared.spread()
	onlyLo, onlyHi := only.spread()
	s.measure("accept and execute, notified vs none, out of process", compared.ratio())
	s.measure("accept only, notified vs none, out of process", only.ratio())
	s.notes = append(s.notes, fmt.Sprintf(`With deliveries configured, the gateway on SQLite accepted and executed
at **%.2f×** the rate without them (the median of %d rounds' ratios;
rounds %.2f–%.2f×), and at %s (%s) counting until every event was at
its destination. The last deliveries of a round came %s after its last
execution (median; at most %s). Accepting only, the 202s with targets to
store came at %.2f× (%.2f–%.2f×) the rate of those without.`,
		compared.ratio(), len(compared.ratios()), lo, hi, ratioOf(untilDelivered), spreadOf(untilDelivered),
		ms(time.Duration(median(drains, func(d time.Duration) float64 { return float64(d) }))), ms(slices.Max(drains)),
		only.ratio(), onlyLo, onlyHi))
	return s, ps.stop()
}
