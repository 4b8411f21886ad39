// Command reports is a small application with a slow endpoint made
// asynchronous by asyncreply. Run it, then open the printed URL in a browser
// (a waiting page turns into the report) or follow it with curl.
//
//	go run ./examples/reports
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"html"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/asyncreply/asyncreply"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on (port 0 picks a free one)")
	duration := flag.Duration("duration", 5*time.Second, "how long a report takes to build")
	flag.Parse()

	ar, err := asyncreply.New(asyncreply.Config{
		// Who may see an operation: the user the request authenticates as.
		Owner: func(r *http.Request) (string, error) { return currentUser(r), nil },
	})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.Context().Value(userKey{}).(string) // set by withUser, on replay too
		steps := 5
		for i := range steps {
			asyncreply.ReportProgress(r.Context(), i*100/steps, fmt.Sprintf("step %d of %d", i+1, steps))
			select {
			case <-time.After(*duration / time.Duration(steps)):
			case <-r.Context().Done():
				return // canceled with DELETE, or timed out
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<h1>Report %s</h1><p>Built for %s at %s.</p>",
			html.EscapeString(r.PathValue("id")), html.EscapeString(user), time.Now().Format(time.TimeOnly))
	})))

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: ar.Handler(withUser(mux)), ReadHeaderTimeout: 10 * time.Second}
	url := "http://" + ln.Addr().String()
	fmt.Printf("Open %s/reports/42 in a browser, or follow it from a terminal:\n", url)
	fmt.Printf("  curl -i %s/reports/42            # 202 Accepted, Location: the monitor URL\n", url)
	fmt.Printf("  curl -i -H 'Prefer: wait=10' <Location>  # 202 while running, then 303\n")
	fmt.Printf("  curl -L <Location>                 # follows the 303 to the report\n")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
		ar.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Error("serving", "error", err)
		os.Exit(1)
	}
}

type userKey struct{}

// withUser stands for an application's authentication middleware: it runs
// on first arrival and again on replay, and puts the current user in the
// request's context.
func withUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, currentUser(r))))
	})
}

func currentUser(r *http.Request) string {
	if c, err := r.Cookie("user"); err == nil && c.Value != "" {
		return c.Value
	}
	return "guest"
}
