package asyncreply_test

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// metaRefresh finds the refresh a waiting page asks of a browser without
// JavaScript.
var metaRefresh = regexp.MustCompile(`<meta http-equiv="refresh" content="([^"]*)">`)

// refreshTarget is the URL the waiting page reloads, resolved against base.
func refreshTarget(t *testing.T, page []byte, base string) string {
	t.Helper()
	m := metaRefresh.FindSubmatch(page)
	if m == nil {
		t.Fatalf("waiting page has no meta refresh:\n%s", page)
	}
	_, target, ok := strings.Cut(html.UnescapeString(string(m[1])), "url=")
	if !ok {
		t.Fatalf("meta refresh %q has no url", m[1])
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := u.Parse(strings.TrimSpace(target))
	if err != nil {
		t.Fatalf("meta refresh url %q: %v", target, err)
	}
	return ref.String()
}

func TestWaitingPage(t *testing.T) {
	t.Parallel()
	const browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	const message = `<script>alert("pwned")</script> & co`

	t.Run("shows progress, escaped, and refreshes itself", func(t *testing.T) {
		t.Parallel()
		report, reported := newSignal(), make(chan struct{}, 1)
		defer report.fire()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(
			func(w http.ResponseWriter, r *http.Request) {
				if report.wait(r.Context()) {
					asyncreply.ReportProgress(r.Context(), 30, message)
					reported <- struct{}{}
				}
				g.ServeHTTP(w, r)
			}))))

		r, loc := b.submit(t, http.MethodGet, "/reports/1", "", "Accept", browser)
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Fatalf("202 Content-Type = %q, want text/html", ct)
		}
		if got := refreshTarget(t, r.body, loc); got != loc {
			t.Errorf("waiting page refreshes to %q, want the monitor URL %q", got, loc)
		}

		report.fire()
		testwait.Recv(t, reported, "the handler to report progress")
		poll := b.do(t, http.MethodGet, loc, "", "Accept", browser)
		if poll.code != http.StatusAccepted || !strings.HasPrefix(poll.header.Get("Content-Type"), "text/html") {
			t.Fatalf("browser poll = %s, want a 202 waiting page", poll)
		}
		if poll.header.Get("Retry-After") == "" {
			t.Error("browser poll without Retry-After")
		}
		page := string(poll.body)
		if !regexp.MustCompile(`<progress[^>]*value="30"`).MatchString(page) {
			t.Errorf("waiting page has no <progress value=\"30\">:\n%s", page)
		}
		if strings.Contains(page, "<script>") {
			t.Errorf("waiting page contains the progress message's markup unescaped:\n%s", page)
		}
		if !strings.Contains(page, "&lt;script&gt;") || !strings.Contains(page, "&amp; co") {
			t.Errorf("waiting page does not show the progress message escaped:\n%s", page)
		}
		if got := refreshTarget(t, poll.body, loc); got != loc {
			t.Errorf("waiting page refreshes to %q, want the monitor URL %q", got, loc)
		}
	})

	t.Run("API clients get JSON", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
		for _, accept := range []string{"", "*/*", "application/json", "application/json, text/html;q=0.5"} {
			r, _ := b.submit(t, http.MethodGet, "/reports/1", "", "Accept", accept)
			decodeDoc(t, r)
		}
	})

	t.Run("refresh URL honours PublicURL's path", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{PublicURL: "https://public.example/app"}, route("GET /reports/{id}", asyncreply.Async(g)))

		r, loc := b.submit(t, http.MethodGet, "/reports/1", "", "Accept", browser)
		if !strings.HasPrefix(loc, "https://public.example/app/operations/") {
			t.Fatalf("Location = %q, want it under PublicURL", loc)
		}
		if got := refreshTarget(t, r.body, loc); got != loc {
			t.Errorf("waiting page refreshes to %q, want the monitor URL %q", got, loc)
		}
	})
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
	testwait.Recv(t, g.started, "the replay to start")
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
