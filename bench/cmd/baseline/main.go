// Command baseline is a server of the load harness's out-of-process mode
// (go run ./bench -mode outproc): the application behind the gateway, and
// each baseline the gateway is measured against, every one in a process
// of its own, so that no two servers share a Go runtime, which would
// flatter whichever shares it:
//
//	baseline -role upstream -listen ADDR                 the application: GET and POST /fast, GET /slow/{id}
//	baseline -role proxy -listen ADDR -upstream URL      httputil.ReverseProxy alone, tuned as the gateway's
//	baseline -role plain -listen ADDR -answer FILE       writes one recorded answer (JSON), whatever the request
//	baseline -role river -listen ADDR -postgres URL -schema S   River by hand (-execute=false: accept only)
//	baseline -role receiver -listen ADDR                 a webhook receiver: POST /hooks/… answers 204
//
// Every role answers GET /healthz with 200, for the harness to wait on;
// upstream and river also answer GET /executed with the operations they
// executed so far, for the harness to wait until every accepted operation
// is, and upstream GET /deferrable with the requests to /fast that came
// marked deferrable (Asyncreply-Deferrable), for the harness to check that
// the gateway's pass-through kept their bodies for the handshake. The
// receiver verifies nothing and answers GET /received with the distinct
// events it was sent, and GET /stats with those, the copies, and their
// lags behind their operations' completion (benchutil.ReceiverStats, in
// JSON). The process serves until SIGTERM or SIGINT.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asyncreply/asyncreply/gateway"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	flags := flag.NewFlagSet("baseline", flag.ContinueOnError)
	var (
		role     = flags.String("role", "", "upstream, proxy, plain, river or receiver")
		listen   = flags.String("listen", "127.0.0.1:0", "`address` to listen on")
		upstream = flags.String("upstream", "", "proxy: the `URL` to forward to")
		answer   = flags.String("answer", "", "plain: a JSON `file` holding the answer to write (Status, Header, Body)")
		postgres = flags.String("postgres", "", "river: the PostgreSQL `URL`")
		schema   = flags.String("schema", "", "river: the `schema` to create its tables in")
		execute  = flags.Bool("execute", true, "river: run workers executing what is accepted; false: accept only, as beside separate workers")
	)
	if err := flags.Parse(args); err != nil {
		return err
	}
	var (
		h       http.Handler
		cleanUp = func() {}
		err     error
	)
	switch *role {
	case "upstream":
		h = upstreamApp()
	case "proxy":
		h, err = reverseProxy(*upstream)
	case "plain":
		h, err = plainAnswer(*answer)
	case "river":
		h, cleanUp, err = riverByHand(ctx, *postgres, *schema, *execute)
	case "receiver":
		h = receiver()
	default:
		err = fmt.Errorf("-role %q: want upstream, proxy, plain, river or receiver", *role)
	}
	if err != nil {
		return err
	}
	defer cleanUp()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle("/", h)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// upstreamApp is the application behind the gateway and the proxy: every
// route answers at once with a short body, so that what is measured is
// what stands in front of it.
func upstreamApp() http.Handler {
	var executed, deferrable atomic.Int64
	mux := http.NewServeMux()
	fast := func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(gateway.DeferrableHeader) == "1" {
			deferrable.Add(1)
		}
		// A body is read whole, as an application would: the gateway keeps
		// a copy of it while it streams, for the deferral handshake.
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "fast answer")
	}
	mux.HandleFunc("GET /fast", fast)
	mux.HandleFunc("POST /fast", fast)
	mux.HandleFunc("GET /slow/{id}", func(w http.ResponseWriter, r *http.Request) {
		executed.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "slow answer")
	})
	mux.HandleFunc("GET /executed", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strconv.FormatInt(executed.Load(), 10))
	})
	// The requests to /fast the gateway marked deferrable: those whose body
	// it kept for the deferral handshake.
	mux.HandleFunc("GET /deferrable", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strconv.FormatInt(deferrable.Load(), 10))
	})
	return mux
}

// reverseProxy is httputil.ReverseProxy alone, its transport keeping as
// many idle connections to the upstream as the gateway's.
func reverseProxy(rawURL string) (http.Handler, error) {
	if rawURL == "" {
		return nil, errors.New("-role proxy needs -upstream")
	}
	target, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("-upstream: %w", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 0
	transport.MaxIdleConnsPerHost = gateway.DefaultMaxIdleConnsPerHost
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: transport,
	}, nil
}

// plainAnswer writes the answer recorded in the file at path, as a
// hand-written handler writing the same bytes would.
func plainAnswer(path string) (http.Handler, error) {
	if path == "" {
		return nil, errors.New("-role plain needs -answer")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var answer benchutil.Recorded
	if err := json.Unmarshal(b, &answer); err != nil {
		return nil, fmt.Errorf("-answer %s: %w", path, err)
	}
	if answer.Status == 0 {
		return nil, fmt.Errorf("-answer %s: no Status", path)
	}
	return answer.Plain(), nil
}

// riverByHand serves River by hand in schema, executing or not; GET
// /executed counts the results its workers stored.
func riverByHand(ctx context.Context, rawURL, schema string, execute bool) (http.Handler, func(), error) {
	if rawURL == "" || schema == "" {
		return nil, nil, errors.New("-role river needs -postgres and -schema")
	}
	pool, err := pgxpool.New(ctx, rawURL)
	if err != nil {
		return nil, nil, err
	}
	h, err := benchutil.NewRiverByHand(ctx, pool, schema, execute)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /executed", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strconv.FormatInt(h.Executed(), 10))
	})
	mux.Handle("/", h)
	return mux, func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h.Stop(stopCtx)
		pool.Close()
	}, nil
}

// receiver is a webhook receiver that verifies nothing, answering every
// POST of an event under /hooks/ with 204, and serving what it received.
func receiver() http.Handler {
	r := benchutil.NewReceiver()
	mux := http.NewServeMux()
	mux.Handle("POST /hooks/", r)
	mux.HandleFunc("GET /received", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, strconv.FormatInt(r.Received(), 10))
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(r.Stats())
	})
	return mux
}
