package asyncreply_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/asyncreply/asyncreply"
)

// chi keeps its route parameters in the request's context, which a replay
// does not inherit: the router must match the replayed request afresh, as it
// does because Handler wraps the router rather than sit inside it.
func TestChiRouteParametersSurviveReplay(t *testing.T) {
	t.Parallel()
	ar, err := asyncreply.New(asyncreply.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler { // a router-level middleware, run on replay too
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Router-Middleware", "ran")
			next.ServeHTTP(w, r)
		})
	})
	r.With(asyncreply.Async).Get("/teams/{team}/reports/{id}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, chi.URLParam(r, "team")+"/"+chi.URLParam(r, "id"))
	})
	srv := httptest.NewServer(ar.Handler(r))
	t.Cleanup(func() {
		srv.Close()
		ar.Shutdown(context.Background())
	})

	resp, err := http.Get(srv.URL + "/teams/blue/reports/9")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: status %d, want 202", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", resp.Header.Get("Location"), nil)
	req.Header.Set("Prefer", "wait=10")
	final, err := http.DefaultClient.Do(req) // follows the 303
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(final.Body)
	final.Body.Close()
	if final.StatusCode != http.StatusOK || string(body) != "blue/9" || final.Header.Get("X-Router-Middleware") != "ran" {
		t.Fatalf("final response: %d %q, X-Router-Middleware %q; want 200 \"blue/9\", \"ran\"",
			final.StatusCode, body, final.Header.Get("X-Router-Middleware"))
	}
}
