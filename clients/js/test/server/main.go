// Command server is the Go application the JavaScript client's tests run
// against: a few slow, failing and cancellable routes made asynchronous by
// asyncreply on its memory backend, and the same routes served synchronously
// under /sync/ for comparison.
//
// It listens on a free loopback port, prints its base URL on the first line
// of standard output, and runs until its standard input closes or it is
// interrupted, so that it never outlives the test that started it. With
// -admin it serves the operator's dashboard (AdminHandler) on a second free
// port, as an operator listener apart from the clients', and prints its URL
// on the second line.
//
//	go run ./clients/js/test/server [-static DIR] [-admin] [-owner-cookie NAME]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asyncreply/asyncreply"
)

func main() {
	static := flag.String("static", "", "`directory` served under /static/, for pages that load the client")
	admin := flag.Bool("admin", false, "serve the dashboard on a second port, printed on the second line")
	ownerCookie := flag.String("owner-cookie", "", "bind operations to the value of the cookie `NAME`, as the feed needs")
	flag.Parse()
	if err := run(*static, *admin, *ownerCookie); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

func run(static string, admin bool, ownerCookie string) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := asyncreply.Config{Logger: logger}
	if ownerCookie != "" {
		cfg.Owner = func(r *http.Request) (string, error) {
			c, err := r.Cookie(ownerCookie)
			if err != nil || c.Value == "" {
				return "", errors.New("no " + ownerCookie + " cookie")
			}
			return c.Value, nil
		}
	}
	ar, err := asyncreply.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: ar.Handler(newApp(static)), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("http://%s\n", ln.Addr())
	if admin {
		adminLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		adminSrv := &http.Server{Handler: ar.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
		go adminSrv.Serve(adminLn)
		defer adminSrv.Close()
		fmt.Printf("http://%s\n", adminLn.Addr())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := ar.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// canceled counts handlers of /hang whose context ended before they finished.
var canceled atomic.Int64

func newApp(static string) http.Handler {
	mux := http.NewServeMux()
	both := func(method, path string, h http.HandlerFunc) {
		mux.Handle(method+" "+path, asyncreply.Async(h))
		mux.Handle(method+" /sync"+path, h)
	}
	both("GET", "/reports/{id}", report)
	both("POST", "/echo", echo)
	both("GET", "/teapot", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "short and stout", http.StatusTeapot)
	})
	mux.Handle("GET /fail", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asyncreply.Fail(r.Context(), http.StatusBadGateway, "Upstream unreachable", "The report service did not answer.")
	})))
	mux.Handle("GET /panic", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("the report generator crashed")
	})))
	mux.Handle("GET /hang", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asyncreply.ReportProgress(r.Context(), 1, "waiting forever")
		<-r.Context().Done()
		canceled.Add(1)
	})))
	mux.HandleFunc("GET /canceled", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, canceled.Load())
	})
	mux.HandleFunc("POST /queue", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted) // an application's own 202, not an operation
		fmt.Fprint(w, "queued")
	})
	mux.HandleFunc("GET /plain", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Plain", "yes")
		fmt.Fprint(w, "synchronous")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>test</title><h1>asyncreply client test</h1>")
	})
	if static != "" {
		mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServer(http.Dir(static))))
	}
	return mux
}

// report takes steps × step to build, reporting progress before each step.
// ?steps=N (default 4), ?step=DURATION (default 150ms), ?format=html.
func report(w http.ResponseWriter, r *http.Request) {
	steps, err := strconv.Atoi(r.FormValue("steps"))
	if err != nil || steps < 1 || steps > 100 {
		steps = 4
	}
	step, err := time.ParseDuration(r.FormValue("step"))
	if err != nil || step < 0 || step > 10*time.Second {
		step = 150 * time.Millisecond
	}
	for i := range steps {
		asyncreply.ReportProgress(r.Context(), i*100/steps, fmt.Sprintf("step %d of %d", i+1, steps))
		select {
		case <-time.After(step):
		case <-r.Context().Done():
			return
		}
	}
	id := r.PathValue("id")
	w.Header().Set("X-Report", id)
	if r.FormValue("format") == "html" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><title>Report %[1]s</title><h1>Report %[1]s</h1><p>Built in %[2]d steps.</p>",
			html.EscapeString(id), steps)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"report": id, "steps": steps})
}

// echo answers 201 with the request's body and content type.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "unreadable body", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
	w.Header().Set("X-Echo-Authorization", r.Header.Get("Authorization"))
	w.WriteHeader(http.StatusCreated)
	w.Write(body)
}
