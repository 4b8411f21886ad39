package asyncreply_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
)

// The Operation-Location monitor answers 200 and the status document in
// every state, never a redirect: Azure's pollers read a 303 after a GET as
// a failure, and find the answer at resourceLocation instead.
func TestStatusMonitor(t *testing.T) {
	t.Parallel()
	g := newGate(text("the report"))
	defer g.release.fire()
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("GET /reports/{id}", asyncreply.Async(g)))
	alice := []string{"X-User", "alice"}

	accepted, loc := b.submit(t, http.MethodGet, "/reports/1", "", alice...)
	status := accepted.header.Get("Operation-Location")
	if status != loc+"/status" {
		t.Fatalf("Operation-Location = %q, want %q", status, loc+"/status")
	}
	recv(t, g.started, "the replay to start")

	running := b.do(t, http.MethodGet, status, "", alice...)
	if running.code != http.StatusOK || running.header.Get("Retry-After") == "" {
		t.Fatalf("status while running = %s (Retry-After %q), want 200 with Retry-After", running, running.header.Get("Retry-After"))
	}
	if doc := decodeDoc(t, running); doc.Status != "Running" || doc.ResourceLocation != "" {
		t.Errorf("status document while running = %+v, want Running without resourceLocation", doc)
	}
	poll := b.do(t, http.MethodGet, loc, "", alice...)
	if poll.code != http.StatusAccepted || poll.header.Get("Location") != loc || poll.header.Get("Operation-Location") != status {
		t.Errorf("pending poll = %d, Location %q, Operation-Location %q; want 202 naming both monitors",
			poll.code, poll.header.Get("Location"), poll.header.Get("Operation-Location"))
	}
	if r := b.do(t, http.MethodGet, status, "", "X-User", "bob"); r.code != http.StatusNotFound {
		t.Errorf("bob's status = %s, want 404", r)
	}

	g.release.fire()
	done := b.do(t, http.MethodGet, status, "", append([]string{"Prefer", "wait=" + waitSeconds()}, alice...)...)
	if done.code != http.StatusOK || done.header.Get("Location") != "" {
		t.Fatalf("status once done = %s (Location %q), want 200 and no redirect", done, done.header.Get("Location"))
	}
	doc := decodeDoc(t, done)
	if doc.Status != "Succeeded" || doc.ResourceLocation != loc+"/response" {
		t.Fatalf("status document once done = %+v, want Succeeded with resourceLocation %s", doc, loc+"/response")
	}
	if r := b.do(t, http.MethodGet, doc.ResourceLocation, "", alice...); r.code != http.StatusOK || string(r.body) != "the report" {
		t.Errorf("resourceLocation = %s, want the report", r)
	}
	if r := b.do(t, http.MethodDelete, status, "", alice...); r.code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE of the status monitor = %s, want 405", r)
	}
}

// The waiting page and the error page forbid framing and sniffing, which
// only headers can do: a <meta> policy cannot say frame-ancestors.
func TestWaitingPageHeaders(t *testing.T) {
	t.Parallel()
	const browser = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
	g := newGate(func(http.ResponseWriter, *http.Request) { panic("boom") })
	defer g.release.fire()
	b := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(g)))

	accepted, loc := b.submit(t, http.MethodGet, "/reports/1", "", "Accept", browser)
	recv(t, g.started, "the replay to start")
	running := b.do(t, http.MethodGet, loc, "", "Accept", browser)
	g.release.fire()
	failed := b.finish(t, loc, "Accept", browser)
	for name, r := range map[string]reply{"202": accepted, "poll": running, "error page": failed} {
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Fatalf("%s: Content-Type %q, want the page", name, ct)
		}
		csp := r.header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("%s: Content-Security-Policy %q, want the page's policy with frame-ancestors 'none'", name, csp)
		}
		if got := r.header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q, want nosniff", name, got)
		}
	}
	if failed.code != http.StatusInternalServerError {
		t.Errorf("error page status = %d, want 500", failed.code)
	}
}
