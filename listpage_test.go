package asyncreply_test

import (
	"crypto/sha256"
	"encoding/base64"
	"html"
	"net/http"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

const browserAccept = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"

var (
	listRow     = regexp.MustCompile(`<tr id="op-([^"]+)" data-id="[^"]+">\s*<td><a href="([^"]+)">`)
	olderLink   = regexp.MustCompile(`<a href="([^"]+)">Older operations</a>`)
	inlineBlock = regexp.MustCompile(`(?s)<(script|style)[^>]*>(.*?)</(?:script|style)>`)
)

// listRows returns the operation IDs a list page shows, in order, and
// checks that each links to its own monitor path.
func listRows(t *testing.T, page string) []string {
	t.Helper()
	var ids []string
	for _, m := range listRow.FindAllStringSubmatch(page, -1) {
		if want := asyncreply.DefaultPrefix + m[1]; html.UnescapeString(m[2]) != want {
			t.Errorf("row %s links to %q, want its monitor path %q", m[1], m[2], want)
		}
		ids = append(ids, m[1])
	}
	return ids
}

func TestListPage(t *testing.T) {
	t.Parallel()
	const hostile = `</script><script>alert(1)</script>`
	g := newGate(text("done"))
	defer g.release.fire()
	app := http.NewServeMux()
	app.Handle("GET /slow", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asyncreply.ReportProgress(r.Context(), 40, hostile)
		g.ServeHTTP(w, r)
	})))
	app.Handle("GET /broken", asyncreply.Async(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })))
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, app)
	alice := []string{"X-User", "alice", "Accept", browserAccept, "Host", "evil.example"}

	_, broken := b.submit(t, http.MethodGet, "/broken", "", "X-User", "alice")
	b.finish(t, broken, "X-User", "alice")
	_, slow := b.submit(t, http.MethodGet, "/slow", "", "X-User", "alice")
	_, bobs := b.submit(t, http.MethodGet, "/slow", "", "X-User", "bob")
	testwait.Recv(t, g.started, "a slow replay to start")
	testwait.Recv(t, g.started, "the other slow replay to start")

	r := b.do(t, http.MethodGet, asyncreply.DefaultPrefix, "", alice...)
	page := string(r.body)
	if r.code != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("list for a browser = %s, want 200 and the HTML page", r)
	}
	if got, want := listRows(t, page), []string{path.Base(slow), path.Base(broken)}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("rows = %q, want alice's two, newest first: %q", got, want)
	}
	if strings.Contains(page, path.Base(bobs)) {
		t.Errorf("alice's page shows bob's operation %s", bobs)
	}
	if strings.Contains(page, "evil.example") {
		t.Error("the page's links use the Host the client sent")
	}
	if strings.Contains(page, "<script>alert") || !strings.Contains(page, html.EscapeString(hostile)) {
		t.Error("the progress message is not shown escaped")
	}
	if !strings.Contains(page, "Internal Server Error") {
		t.Errorf("the failed operation's row does not show its problem's title:\n%s", page)
	}
	if !strings.Contains(page, `<noscript><meta http-equiv="refresh"`) {
		t.Error("with an operation running, the page does not refresh itself without JavaScript")
	}

	t.Run("headers and policy", func(t *testing.T) {
		csp := r.header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") ||
			r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("headers %v, want the waiting page's: its own policy with frame-ancestors 'none', nosniff, no-store", r.header)
		}
		blocks := inlineBlock.FindAllStringSubmatch(page, -1)
		if len(blocks) != 2 {
			t.Fatalf("%d inline blocks, want one style and one script", len(blocks))
		}
		for _, m := range blocks {
			sum := sha256.Sum256([]byte(m[2]))
			if hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, m[1]+"-src "+hash) {
				t.Errorf("policy %q does not allow the page's %s by its hash %s", csp, m[1], hash)
			}
		}
	})

	t.Run("filtered", func(t *testing.T) {
		r := b.do(t, http.MethodGet, asyncreply.DefaultPrefix+"?status=Failed", "", alice...)
		page := string(r.body)
		if got := listRows(t, page); len(got) != 1 || got[0] != path.Base(broken) {
			t.Errorf("Failed rows = %q, want the broken one alone", got)
		}
		if !strings.Contains(page, "<strong>Failed</strong>") {
			t.Error("the page does not mark the filter it shows")
		}
		if r := b.do(t, http.MethodGet, asyncreply.DefaultPrefix+"?status=Sideways", "", alice...); r.code != http.StatusBadRequest {
			t.Errorf("an unknown status = %s, want 400", r)
		}
	})

	t.Run("paged", func(t *testing.T) {
		first := string(b.do(t, http.MethodGet, asyncreply.DefaultPrefix+"?pageSize=1", "", alice...).body)
		m := olderLink.FindStringSubmatch(first)
		if m == nil {
			t.Fatalf("first page of one has no link to older operations:\n%s", first)
		}
		next := html.UnescapeString(m[1])
		if !strings.HasPrefix(next, asyncreply.DefaultPrefix+"?") {
			t.Fatalf("older link %q is not a path under the prefix", next)
		}
		second := string(b.do(t, http.MethodGet, next, "", alice...).body)
		if got := listRows(t, second); len(got) != 1 || got[0] != path.Base(broken) {
			t.Errorf("second page = %q, want the older one", got)
		}
		if olderLink.MatchString(second) {
			t.Error("the last page links to older operations")
		}
	})

	t.Run("finished: no refresh", func(t *testing.T) {
		g.release.fire()
		b.finish(t, slow, "X-User", "alice")
		page := string(b.do(t, http.MethodGet, asyncreply.DefaultPrefix, "", alice...).body)
		if strings.Contains(page, `http-equiv="refresh"`) {
			t.Error("with every operation finished, the page still refreshes itself")
		}
	})

	t.Run("another owner", func(t *testing.T) {
		page := string(b.do(t, http.MethodGet, asyncreply.DefaultPrefix, "", "X-User", "carol", "Accept", browserAccept).body)
		if got := listRows(t, page); len(got) != 0 || !strings.Contains(page, "No operations") {
			t.Errorf("carol's page shows %q, want none", got)
		}
	})
}
