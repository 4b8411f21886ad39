package gateway_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/asyncreply/asyncreply/gateway"
)

// The gateway's dashboard acts on its operations: a re-run of a replay
// still running is replayed to the upstream again, as a new operation.
func TestAdminHandlerReruns(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 2)
	release := make(chan struct{})
	var calls atomic.Int64
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		started <- struct{}{}
		if n == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.Write([]byte("report " + r.URL.Path))
	})
	b := setup(t, upstream, gateway.Config{Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})
	defer close(release)
	resp, body := b.get(t, b.gateway.URL+"/reports/1")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("GET /reports/1 = %d %s, want 202", resp.StatusCode, body)
	}
	<-started

	rec := httptest.NewRecorder()
	b.gw.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost,
		"/api/operations/"+strings.TrimPrefix(resp.Header.Get("Location"), b.gateway.URL+gateway.DefaultPrefix)+"/rerun", nil))
	if rec.Code != http.StatusCreated {
		t.Fatalf("rerun = %d %s, want 201", rec.Code, rec.Body)
	}
	var again struct{ ID string }
	if err := json.Unmarshal(rec.Body.Bytes(), &again); err != nil || again.ID == "" {
		t.Fatalf("rerun answered %s (%v)", rec.Body, err)
	}
	final, text := b.finalResponse(t, b.gateway.URL+gateway.DefaultPrefix+again.ID)
	if final.StatusCode != http.StatusOK || text != "report /reports/1" {
		t.Errorf("the re-run's response = %d %q, want the upstream's report", final.StatusCode, text)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the upstream was called %d times, want 2: the replay and its re-run", n)
	}
}
