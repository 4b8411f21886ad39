package gateway_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply/gateway"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// The admin listener's cookie is the operator's credential, and a browser
// sends it to every port of the host that set it — so to the listener
// clients reach too, when both are on one host. The gateway never hands it
// to the upstream, nor records it with an operation for the replay: the
// application (and its logs) never see it; its other cookies pass.
func TestAdminCookieIsNotForwardedNorRecorded(t *testing.T) {
	t.Parallel()
	seen := make(chan string, 4)
	b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.URL.Path + " " + strings.Join(r.Header.Values("Cookie"), " | ")
		w.Write([]byte("ok"))
	}), gateway.Config{Async: []gateway.Route{{Pattern: "GET /reports/{id}"}}})
	cookie := "theme=dark; " + gateway.AdminCookieName + "=0123456789abcdef; lang=en"
	if resp, _ := b.get(t, b.gateway.URL+"/plain", "Cookie", cookie); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /plain = %d", resp.StatusCode)
	}
	if got := testwait.Recv(t, seen, "the pass-through request"); got != "/plain theme=dark; lang=en" {
		t.Errorf("the upstream saw %q, want the other cookies only", got)
	}
	if resp, _ := b.get(t, b.gateway.URL+"/reports/1", "Cookie", gateway.AdminCookieName+"=0123456789abcdef"); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("GET /reports/1 = %d, want 202", resp.StatusCode)
	}
	if got := testwait.Recv(t, seen, "the replay"); got != "/reports/1 " {
		t.Errorf("the replay's upstream saw %q, want no cookie", got)
	}
}
