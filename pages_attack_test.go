package asyncreply_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// Markup an application or a client controls — a failure's title and
// detail, a progress message, the owner's principal — reaches the list
// page and the operator's dashboard as text: no tag, attribute or script
// of it survives, the pages allow no inline script but their own, and
// the JSON answers cannot be sniffed into HTML.
func TestPagesShowHostileValuesAsText(t *testing.T) {
	t.Parallel()
	const (
		tag    = `<img src=x onerror=alert(1)>`
		quoted = `"><svg onload=alert(2)>`
		script = `</script><script>alert(3)</script>`
		user   = `<b onclick=alert(4)>mallory</b>`
	)
	g := newGate(text("done"))
	defer g.release.fire()
	app := http.NewServeMux()
	app.Handle("GET /hostile-fail", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asyncreply.Fail(r.Context(), http.StatusBadGateway, tag+quoted, script+tag)
	})))
	app.Handle("GET /hostile-progress", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asyncreply.ReportProgress(r.Context(), 40, quoted+script+tag)
		g.ServeHTTP(w, r)
	})))
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, app)
	admin := httptest.NewServer(b.ar.AdminHandler())
	defer admin.Close()
	mallory := []string{"X-User", user}
	_, failed := b.submit(t, http.MethodGet, "/hostile-fail", "", mallory...)
	b.finish(t, failed, mallory...)
	b.submit(t, http.MethodGet, "/hostile-progress", "", mallory...)
	testwait.Recv(t, g.started, "the hostile progress replay to start")

	for _, c := range []struct {
		what string
		r    reply
	}{
		{"the list page", b.do(t, http.MethodGet, asyncreply.DefaultPrefix, "", append(mallory, "Accept", browserAccept)...)},
		{"the dashboard", b.do(t, http.MethodGet, admin.URL+"/", "")},
	} {
		if c.r.code != http.StatusOK || !strings.HasPrefix(c.r.header.Get("Content-Type"), "text/html") {
			t.Fatalf("%s = %s", c.what, c.r)
		}
		page := string(c.r.body)
		if !strings.Contains(page, "alert(2)") {
			t.Errorf("%s does not show the hostile values at all:\n%s", c.what, page)
		}
		for _, v := range []string{tag, quoted, script, user, "<img", "<svg", "<script>alert", "<b onclick"} {
			if strings.Contains(page, v) {
				t.Errorf("%s holds %q unescaped", c.what, v)
			}
		}
		if csp := c.r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'sha256-") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: Content-Security-Policy %q, want scripts by hash alone", c.what, csp)
		}
	}
	for _, c := range []struct {
		what string
		r    reply
	}{
		{"the list", b.do(t, http.MethodGet, asyncreply.DefaultPrefix, "", mallory...)},
		{"the dashboard's summary", b.do(t, http.MethodGet, admin.URL+"/api/summary", "")},
		{"the dashboard's operations", b.do(t, http.MethodGet, admin.URL+"/api/operations", "")},
	} {
		if ct := c.r.header.Get("Content-Type"); ct != "application/json" || c.r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: Content-Type %q, X-Content-Type-Options %q; want application/json, nosniff", c.what, ct, c.r.header.Get("X-Content-Type-Options"))
		}
		if strings.Contains(string(c.r.body), "<") {
			t.Errorf("%s holds a raw '<': JSON escapes it (\\u003c)", c.what)
		}
	}
}
