package asyncreply_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/memory"
)

// outage is a backend whose store cannot be reached.
type outage struct{ *memory.Backend }

func (outage) Get(context.Context, string) (*backend.Operation, error) {
	return nil, backend.ErrUnavailable
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	healthy := setup(t, asyncreply.Config{}, http.NotFoundHandler())
	for _, path := range []string{"/operations/healthz", "/operations/readyz"} {
		if r := healthy.do(t, http.MethodGet, path, ""); r.code != http.StatusOK || string(r.body) != "ok\n" {
			t.Errorf("GET %s = %s, want 200 ok", path, r)
		}
	}

	down := setup(t, asyncreply.Config{Backend: outage{memory.New(memory.Config{})}}, http.NotFoundHandler())
	if r := down.do(t, http.MethodGet, "/operations/healthz", ""); r.code != http.StatusOK {
		t.Errorf("healthz with the backend down = %s, want 200: the process itself is fine", r)
	}
	if r := down.do(t, http.MethodGet, "/operations/readyz", ""); r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Errorf("readyz with the backend down = %s, want 503 with Retry-After", r)
	}
}
