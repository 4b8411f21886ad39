package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/asyncreply/asyncreply/gateway"
)

type demoOptions struct {
	listen   string
	delay    time.Duration
	timeouts serverTimeouts

	telemetry *telemetry // from the OTEL_* variables; nil: no tracing
}

func parseDemo(args []string, getenv func(string) string, help io.Writer) (*demoOptions, error) {
	o := &demoOptions{}
	fs := newCommand("demo", help, `Usage: asyncreply demo [flags]

Starts a small, slow example application and the gateway in front of it, on
the embedded SQLite backend in a temporary directory, and prints the URL to
open and the curl commands to try. GET /reports/{id} is asynchronous. Runs
until interrupted (Ctrl-C).
`)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "`address` the gateway listens on")
	fs.DurationVar(&o.delay, "delay", 3*time.Second, "how long the example application takes to build a report")
	o.timeouts.addFlags(fs)
	if err := fs.parse(args, getenv); err != nil {
		return nil, err
	}
	if o.delay < 0 {
		return nil, fmt.Errorf("--delay must not be negative, got %s", o.delay)
	}
	if err := o.timeouts.check(); err != nil {
		return nil, err
	}
	return o, nil
}

func runDemo(ctx context.Context, o *demoOptions, stdout, stderr io.Writer) int {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir, err := os.MkdirTemp("", "asyncreply-demo-")
	if err != nil {
		fmt.Fprintf(stderr, "asyncreply demo: %v\n", err)
		return exitFailure
	}
	defer os.RemoveAll(dir)

	appListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(stderr, "asyncreply demo: starting the example application: %v\n", err)
		return exitFailure
	}
	app := newServer(demoApp(o.delay), o.timeouts, logger)
	appDone := make(chan struct{})
	go func() {
		defer close(appDone)
		app.Serve(appListener)
	}()
	defer func() {
		app.Close() // after the gateway's shutdown: replays have finished or been canceled
		<-appDone
	}()

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		fmt.Fprintf(stderr, "asyncreply demo: --listen: %v\n", err)
		return exitFailure
	}
	gw, err := newGateway(ctx, &gatewayOptions{
		upstream:    "http://" + appListener.Addr().String(),
		async:       routeList{list[gateway.Route]{values: []gateway.Route{{Pattern: "GET /reports/{id}"}}}},
		backend:     "sqlite://" + filepath.Join(dir, "asyncreply.db"),
		concurrency: gateway.DefaultConcurrency,
		key:         keyFlag{demoKey()},
		progressURL: localURL(ln.Addr()),
		telemetry:   o.telemetry,
	}, logger)
	if err != nil {
		ln.Close()
		fmt.Fprintf(stderr, "asyncreply demo: %v\n", err)
		return exitFailure
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, `asyncreply demo: a slow application (%s per report) behind the gateway.

Open %s/reports/42 in a browser: a waiting page, then the report.

Or with curl:
  curl -si %s/reports/42                     # 202 Accepted, Location: %s/operations/ID
  curl -si %s/operations/ID                  # 202 while it runs, then 303 See Other
  curl -sL %s/operations/ID                  # follows the 303 to the report
  curl -sL -H 'Prefer: wait=10' %s/reports/7 # or wait up to 10 s for the answer

Or with asyncreply's own client, which follows the operation for you:
  go run ./cmd/asyncreply get %s/reports/9

Press Ctrl-C to stop.
`, o.delay, base, base, base, base, base, base, base)
	return serve(ctx, ln, gw, o.timeouts, logger)
}

// demoApp is the example upstream: an application that knows of asyncreply
// only the progress URL a replay carries, where it reports how far its
// report has got. The report takes delay to build, in ten steps.
func demoApp(delay time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><title>asyncreply demo</title><h1>asyncreply demo</h1>
<p><a href="/reports/42">Report 42</a> takes a while; the gateway answers at once and shows a waiting page.</p>`)
	})
	mux.HandleFunc("GET /reports/{id}", func(w http.ResponseWriter, r *http.Request) {
		started := time.Now()
		const steps = 10
		tick := time.NewTicker(max(delay/steps, time.Millisecond))
		defer tick.Stop()
		for step := 1; step <= steps; step++ {
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
			if step < steps {
				reportProgress(r, step*100/steps, fmt.Sprintf("building section %d of %d", step+1, steps))
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>Report %[1]s</title><h1>Report %[1]s</h1>
<p>Built in %[2]s for %[3]s, as operation %[4]s.</p>`,
			html.EscapeString(r.PathValue("id")), time.Since(started).Round(time.Millisecond),
			html.EscapeString(r.Header.Get("X-Forwarded-For")), html.EscapeString(r.Header.Get(gateway.OperationHeader)))
	})
	return mux
}

// demoKey is a key for this run only: the demo's operations live in a
// temporary file and are not read by anything after it.
func demoKey() []byte {
	key := make([]byte, 32)
	rand.Read(key)
	return key
}

// progressClient posts the demo application's progress; a report that
// takes longer than a second is dropped, as progress is advisory.
var progressClient = &http.Client{Timeout: time.Second}

// reportProgress tells the gateway how far the replay of r has got, at the
// URL it gave the replay, as any application may.
func reportProgress(r *http.Request, percent int, message string) {
	url := r.Header.Get(gateway.ProgressHeader)
	if url == "" {
		return // not a replay, or a gateway that takes no progress
	}
	body, _ := json.Marshal(map[string]any{"percent": percent, "message": message})
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if resp, err := progressClient.Do(req); err == nil {
		resp.Body.Close()
	}
}
