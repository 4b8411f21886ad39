package asyncreply_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
)

// A replay that calls Fail ends its operation failed, without a response:
// the poll itself answers with the given status, and the status document
// says Failed with the problem.
func TestFail(t *testing.T) {
	t.Parallel()
	failedOutside := make(chan bool, 1)
	mux := http.NewServeMux()
	mux.Handle("GET /flaky", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asyncreply.Fail(r.Context(), http.StatusBadGateway, "Bad Gateway", "The warehouse could not be reached.")
	})))
	mux.HandleFunc("GET /sync", func(w http.ResponseWriter, r *http.Request) {
		failedOutside <- asyncreply.Fail(r.Context(), http.StatusBadGateway, "Bad Gateway", "")
		w.Write([]byte("fine"))
	})
	b := setup(t, asyncreply.Config{}, mux)

	_, monitor := b.submit(t, http.MethodGet, "/flaky", "")
	r := b.finish(t, monitor)
	if r.code != http.StatusBadGateway || !strings.HasPrefix(r.header.Get("Content-Type"), "application/problem+json") {
		t.Fatalf("poll of a failed operation = %s, want 502 problem+json", r)
	}
	var p struct {
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil || p.Status != http.StatusBadGateway || p.Detail != "The warehouse could not be reached." {
		t.Errorf("problem = %s (%v)", r.body, err)
	}
	status := b.do(t, http.MethodGet, monitor+"/response", "")
	if status.code != http.StatusBadGateway {
		t.Errorf("/response of a failed operation = %s, want the failure", status)
	}

	if r := b.do(t, http.MethodGet, "/sync", ""); r.code != http.StatusOK || string(r.body) != "fine" {
		t.Errorf("synchronous request = %s", r)
	}
	if <-failedOutside {
		t.Error("Fail outside a replay returned true")
	}
	if asyncreply.Fail(context.Background(), 500, "", "") {
		t.Error("Fail without a Middleware returned true")
	}
}
