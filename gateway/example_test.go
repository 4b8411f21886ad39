package gateway_test

import (
	"context"
	"log"
	"net/http"

	"github.com/asyncreply/asyncreply/backend/backendurl"
	"github.com/asyncreply/asyncreply/gateway"
)

// A gateway in front of an application on port 3000, in which the slow
// report is asynchronous, each operation readable only by the user the
// application's /whoami names, and everything else is proxied unchanged.
func Example() {
	ctx := context.Background()
	be, err := backendurl.Open(ctx, "sqlite://./asyncreply.db", backendurl.Options{Concurrency: gateway.DefaultConcurrency})
	if err != nil {
		log.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{
		Upstream: "http://127.0.0.1:3000",
		Async:    []gateway.Route{{Pattern: "GET /reports/{id}"}},
		Backend:  be,
		Owner:    gateway.OwnerUpstream("/whoami"),
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: gw.Handler()}
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
	// After srv.Shutdown(ctx) elsewhere, on SIGTERM:
	gw.Shutdown(ctx)
}
