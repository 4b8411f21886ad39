package asyncreply_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/asyncreply/asyncreply"
)

// pollUntilDone follows an operation the way any HTTP client can: poll the
// Location while the answer is 202, and let the 303 lead to the response.
// Prefer: wait=N makes each poll a long-poll, so the loop is short.
func pollUntilDone(location string) string {
	for {
		req, _ := http.NewRequest(http.MethodGet, location, nil)
		req.Header.Set("Prefer", "wait=10")
		resp, err := http.DefaultClient.Do(req) // follows the 303 to the response
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Sprintf("%d %s", resp.StatusCode, body)
		}
	}
}

func newExampleServer(cfg asyncreply.Config, app http.Handler) (*httptest.Server, *asyncreply.Middleware) {
	cfg.Logger = slog.New(slog.DiscardHandler)
	ar, err := asyncreply.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	return httptest.NewServer(ar.Handler(app)), ar
}

// Async marks a whole endpoint asynchronous: every request to it is answered
// 202 Accepted, and the handler runs later, in a worker, with the same request.
func ExampleAsync() {
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "report %s is ready", r.PathValue("id")) // slow work goes here
	})))
	srv, ar := newExampleServer(asyncreply.Config{}, mux)
	defer ar.Shutdown(context.Background())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/reports/42")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, strings.HasPrefix(resp.Header.Get("Location"), srv.URL+"/operations/"))
	fmt.Println(pollUntilDone(resp.Header.Get("Location")))
	// Output:
	// 202 true
	// 200 report 42 is ready
}

// Defer makes one request asynchronous from inside a handler: here only big
// exports are deferred, small ones are answered at once. Defer returns false
// on replay, so the same handler then does the work.
func ExampleDefer() {
	export := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("rows") == "all" && asyncreply.Defer(w, r) {
			return // 202 has been sent; the replay runs this handler again
		}
		fmt.Fprintf(w, "export of %s rows", r.URL.Query().Get("rows"))
	})
	srv, ar := newExampleServer(asyncreply.Config{}, export)
	defer ar.Shutdown(context.Background())
	defer srv.Close()

	small, _ := http.Get(srv.URL + "/export?rows=10")
	body, _ := io.ReadAll(small.Body)
	small.Body.Close()
	fmt.Println(small.StatusCode, string(body))

	big, _ := http.Get(srv.URL + "/export?rows=all")
	big.Body.Close()
	fmt.Println(big.StatusCode)
	fmt.Println(pollUntilDone(big.Header.Get("Location")))
	// Output:
	// 200 export of 10 rows
	// 202
	// 200 export of all rows
}

// ReportProgress tells pollers how far an operation has got. Outside a
// replay it does nothing, so handlers call it unconditionally.
func ExampleReportProgress() {
	step := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("POST /imports", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asyncreply.ReportProgress(r.Context(), 40, "parsing rows")
		<-step // the rest of the import
		fmt.Fprint(w, "imported")
	})))
	srv, ar := newExampleServer(asyncreply.Config{}, mux)
	defer ar.Shutdown(context.Background())
	defer srv.Close()

	resp, _ := http.Post(srv.URL+"/imports", "text/csv", strings.NewReader("a,b\n1,2\n"))
	resp.Body.Close()
	location := resp.Header.Get("Location")

	// Subscribe to the operation's events and print the progress once shown.
	events, err := http.Get(location + "/events")
	if err != nil {
		log.Fatal(err)
	}
	defer events.Body.Close()
	buf := make([]byte, 4096)
	for seen := ""; !strings.Contains(seen, `"percent":40`); {
		n, _ := events.Body.Read(buf)
		seen += string(buf[:n])
	}
	fmt.Println(`progress: 40 "parsing rows"`)
	close(step)
	fmt.Println(pollUntilDone(location))
	// Output:
	// progress: 40 "parsing rows"
	// 200 imported
}

// Inline runs each operation inside the request that submits it, and
// answers as the asynchronous mode's first poll would, with the same URLs:
// a redirect to the response. In development and tests no worker is needed,
// and a client that follows the protocol sees no difference but timing.
func ExampleConfig_inline() {
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "report %s", r.PathValue("id"))
	})))
	srv, ar := newExampleServer(asyncreply.Config{Inline: true}, mux)
	defer ar.Shutdown(context.Background())
	defer srv.Close()

	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ := noRedirects.Get(srv.URL + "/reports/7")
	resp.Body.Close()
	fmt.Println(resp.StatusCode, strings.HasSuffix(resp.Header.Get("Location"), "/response"))
	answer, _ := http.Get(srv.URL + "/reports/8") // a client that follows redirects
	body, _ := io.ReadAll(answer.Body)
	answer.Body.Close()
	fmt.Println(answer.StatusCode, string(body))
	// Output:
	// 303 true
	// 200 report 8
}

// AsyncWith gives one route settings of its own: here an export that may
// run an hour and whose answer is kept a week, while every other route keeps
// the Config's.
func ExampleAsyncWith() {
	mux := http.NewServeMux()
	export := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "export ready")
	})
	mux.Handle("POST /exports", asyncreply.AsyncWith(export, asyncreply.RouteOptions{
		Timeout:   time.Hour,
		Retention: 7 * 24 * time.Hour,
	}))
	srv, ar := newExampleServer(asyncreply.Config{}, mux)
	defer ar.Shutdown(context.Background())
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/exports", "text/csv", strings.NewReader("a,b\n"))
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode)
	fmt.Println(pollUntilDone(resp.Header.Get("Location")))
	// Output:
	// 202
	// 200 export ready
}

// DeferWith defers this one request with options of its own: a handler that
// knows a request will be big gives it a longer timeout.
func ExampleDeferWith() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /search", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("scope") == "all" &&
			asyncreply.DeferWith(w, r, asyncreply.RouteOptions{Timeout: 30 * time.Minute}) {
			return // 202 sent; the replay runs this handler again
		}
		fmt.Fprintf(w, "results for %s", r.URL.Query().Get("q"))
	})
	srv, ar := newExampleServer(asyncreply.Config{}, mux)
	defer ar.Shutdown(context.Background())
	defer srv.Close()

	quick, _ := http.Get(srv.URL + "/search?q=go")
	body, _ := io.ReadAll(quick.Body)
	quick.Body.Close()
	fmt.Println(quick.StatusCode, string(body))
	big, _ := http.Get(srv.URL + "/search?q=go&scope=all")
	big.Body.Close()
	fmt.Println(big.StatusCode)
	fmt.Println(pollUntilDone(big.Header.Get("Location")))
	// Output:
	// 200 results for go
	// 202
	// 200 results for go
}

// Fail ends an operation without a response when what went wrong is not
// the application's answer: a dependency that could not be reached, here.
// The client sees the status a synchronous caller would have had, as
// problem details, instead of a stored "successful" error page.
func ExampleFail() {
	mux := http.NewServeMux()
	mux.Handle("GET /quotes", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asyncreply.Fail(r.Context(), http.StatusBadGateway, "Bad Gateway", "The pricing service did not answer.") {
			return // the operation has failed; write nothing
		}
		http.Error(w, "pricing service unreachable", http.StatusBadGateway) // outside a replay
	})))
	srv, ar := newExampleServer(asyncreply.Config{}, mux)
	defer ar.Shutdown(context.Background())
	defer srv.Close()

	resp, _ := http.Get(srv.URL + "/quotes")
	resp.Body.Close()
	fmt.Println(pollUntilDone(resp.Header.Get("Location")))
	// Output:
	// 502 {"type":"about:blank","title":"Bad Gateway","status":502,"detail":"The pricing service did not answer."}
}

// Shutdown comes after http.Server.Shutdown: the server stops taking
// requests and lets those in flight submit, then the Middleware lets
// running operations finish (until its context ends) and stops the backend.
func ExampleMiddleware_Shutdown() {
	ar, err := asyncreply.New(asyncreply.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "report %s", r.PathValue("id"))
	})))
	srv := &http.Server{Handler: ar.Handler(mux), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)

	resp, _ := http.Get("http://" + ln.Addr().String() + "/reports/1")
	resp.Body.Close()
	fmt.Println(resp.StatusCode)

	// On SIGTERM, say:
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Print(err)
	}
	if err := ar.Shutdown(ctx); err != nil {
		log.Print(err) // operations still running were canceled
	}
	fmt.Println("stopped")
	// Output:
	// 202
	// stopped
}

// AdminHandler is the operator's dashboard: mount it on a listener of its
// own, never on the one clients reach, behind the operator's own
// authentication. It links relatively, so it works under a prefix.
func ExampleMiddleware_AdminHandler() {
	app, ar := newExampleServer(asyncreply.Config{}, asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "report")
	})))
	defer ar.Shutdown(context.Background())
	defer app.Close()

	operators := http.NewServeMux()
	operators.Handle("/admin/", http.StripPrefix("/admin", ar.AdminHandler()))
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, password, ok := r.BasicAuth(); !ok || password != "operator's secret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="operators"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		operators.ServeHTTP(w, r)
	}))
	defer admin.Close()

	resp, _ := http.Get(app.URL + "/reports/1")
	resp.Body.Close()
	fmt.Println(pollUntilDone(resp.Header.Get("Location")))

	req, _ := http.NewRequest(http.MethodGet, admin.URL+"/admin/api/summary", nil)
	req.SetBasicAuth("ops", "operator's secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	var summary struct {
		Counts map[string]int `json:"counts"`
		Recent struct {
			Accepted int `json:"accepted"`
		} `json:"recent"`
	}
	json.NewDecoder(resp.Body).Decode(&summary)
	fmt.Println("succeeded:", summary.Counts["Succeeded"], "accepted in the last minute:", summary.Recent.Accepted)
	// Output:
	// 200 report
	// succeeded: 1 accepted in the last minute: 1
}
