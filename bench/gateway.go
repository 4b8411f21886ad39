package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"

	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/gateway"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// gatewayScenario: the gateway passing a request through, and accepting
// one on an asynchronous route, against a tuned httputil.ReverseProxy
// passing the same request through to the same upstream.
func gatewayScenario(ctx context.Context, e *env) (section, error) {
	s := section{
		title: "4. Gateway",
		intro: `An upstream answers GET /fast and GET /slow/{id} at once with a short
body. "ReverseProxy" is httputil.ReverseProxy alone, its transport
keeping 256 idle connections to the upstream. The gateway proxies
GET /fast unchanged ("pass-through") and makes GET /slow/{id}
asynchronous ("accept", memory backend, each operation replayed to the
upstream, the run ending once all are); "accept only" is a gateway whose
backend executes nothing, as beside separate workers: the accept path
alone.`,
	}
	var stops stack
	defer stops.run()

	var replayed atomic.Int64
	upstream := http.NewServeMux()
	upstream.HandleFunc("GET /fast", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "fast answer")
	})
	upstream.HandleFunc("GET /slow/{id}", func(w http.ResponseWriter, r *http.Request) {
		// Answered at once, to measure the gateway rather than the upstream.
		replayed.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "slow answer")
	})
	upstreamSrv := serveHandler(&stops, upstream)
	upstreamURL, err := url.Parse(upstreamSrv.URL)
	if err != nil {
		return s, err
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 0
	transport.MaxIdleConnsPerHost = gateway.DefaultMaxIdleConnsPerHost
	stops.push(transport.CloseIdleConnections)
	proxy := serveHandler(&stops, &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstreamURL)
			pr.SetXForwarded()
		},
		Transport: transport,
	})

	g, err := gateway.New(gateway.Config{
		Upstream: upstreamSrv.URL,
		Async:    []gateway.Route{{Pattern: "GET /slow/{id}", Retention: briefRetention}},
		// Unbounded: a closed loop of accepts outruns the default
		// concurrency's replays, and a bounded queue would fill and answer
		// 503s, measured as accepts.
		Backend: memory.New(memory.Config{Concurrency: gateway.DefaultConcurrency, MaxQueued: -1, MaxQueuedBytes: -1}),
		Logger:  quiet,
	})
	if err != nil {
		return s, err
	}
	gatewaySrv := httptest.NewServer(g.Handler())
	stops.push(func() { gatewaySrv.Close(); g.Shutdown(context.Background()) })
	// The accept path alone, as a gateway beside separate workers: its
	// backend executes nothing, and is unbounded, for what waits only
	// piles up.
	acceptOnly, err := gateway.New(gateway.Config{
		Upstream: upstreamSrv.URL,
		Async:    []gateway.Route{{Pattern: "GET /slow/{id}"}},
		Backend:  benchutil.AcceptOnly{Backend: memory.New(memory.Config{MaxQueued: -1, MaxQueuedBytes: -1})},
		Logger:   quiet,
	})
	if err != nil {
		return s, err
	}
	acceptOnlySrv := httptest.NewServer(acceptOnly.Handler())
	stops.push(func() { acceptOnlySrv.Close(); acceptOnly.Shutdown(context.Background()) })

	reverseProxy := target{name: "ReverseProxy, pass-through", url: proxy.URL + "/fast", want: http.StatusOK}
	tbl, closed, err := e.compare(ctx, []comparison{
		{subject: target{name: "gateway, pass-through", url: gatewaySrv.URL + "/fast", want: http.StatusOK}, baseline: reverseProxy, open: true},
		{subject: target{name: "gateway, accept", url: gatewaySrv.URL + "/slow/7", want: http.StatusAccepted,
			settle: waitExecuted(replayed.Load)}, baseline: reverseProxy, open: true},
		{subject: target{name: "gateway, accept only", url: acceptOnlySrv.URL + "/slow/7", want: http.StatusAccepted},
			baseline: reverseProxy},
	})
	if err != nil {
		return s, err
	}
	s.tables = append(s.tables, tbl)
	s.goals = append(s.goals,
		ratioGoal("gateway pass-through vs tuned ReverseProxy (throughput)", "≥ 0.95×", 0.95, closed["gateway, pass-through vs ReverseProxy, pass-through"]))
	return s, nil
}
