package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/client"
)

// reportServer serves GET /reports/{id} asynchronously, as a slow endpoint
// behind asyncreply would be.
func reportServer() (*httptest.Server, *asyncreply.Middleware) {
	ar, err := asyncreply.New(asyncreply.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asyncreply.ReportProgress(r.Context(), 50, "adding up")
		fmt.Fprintf(w, "report %s is ready", r.PathValue("id"))
	})))
	return httptest.NewServer(ar.Handler(mux)), ar
}

// An existing caller changes one line: the client. The endpoint answers 202
// Accepted, and the caller still gets the report.
func ExampleNew() {
	srv, ar := reportServer()
	defer ar.Shutdown(context.Background())
	defer srv.Close()

	httpClient := client.New(nil) // was: httpClient := http.DefaultClient
	resp, err := httpClient.Get(srv.URL + "/reports/42")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 report 42 is ready
}

// A Transport wraps the transport a client already has, and reports the
// progress of the operations it follows.
func ExampleTransport() {
	srv, ar := reportServer()
	defer ar.Shutdown(context.Background())
	defer srv.Close()

	httpClient := &http.Client{Transport: &client.Transport{
		Base:          http.DefaultTransport, // the transport used so far
		DisableEvents: true,                  // poll, so that the progress below is seen once
		LongPoll:      -1,
		Progress: func(req *http.Request, p client.Progress) {
			if p.Status == "Succeeded" {
				fmt.Printf("%s %s: %d%%\n", req.Method, req.URL.Path, p.Percent)
			}
		},
	}}
	resp, err := httpClient.Get(srv.URL + "/reports/7")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output:
	// GET /reports/7: 100%
	// report 7 is ready
}
