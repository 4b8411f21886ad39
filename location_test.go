package asyncreply_test

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
)

func TestMonitorLocation(t *testing.T) {
	t.Parallel()
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	forwarded := []string{"X-Forwarded-Proto", "https", "X-Forwarded-Host", "public.example"}
	for _, tc := range []struct {
		name   string
		cfg    asyncreply.Config
		header []string
		want   func(srvURL string) string // the monitor URL without the ID
	}{
		{"from the request", asyncreply.Config{}, nil,
			func(u string) string { return u + "/operations/" }},
		{"PublicURL", asyncreply.Config{PublicURL: "https://api.example.com/"}, forwarded,
			func(string) string { return "https://api.example.com/operations/" }},
		{"forwarded by a trusted proxy", asyncreply.Config{TrustedProxies: loopback}, forwarded,
			func(string) string { return "https://public.example/operations/" }},
		{"forwarded by an untrusted client", asyncreply.Config{}, forwarded,
			func(u string) string { return u + "/operations/" }},
		{"forwarded from outside the trusted networks",
			asyncreply.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, forwarded,
			func(u string) string { return u + "/operations/" }},
		{"forwarded host that would break out of the URL", asyncreply.Config{TrustedProxies: loopback},
			[]string{"X-Forwarded-Host", "evil.example/x?"},
			func(u string) string { return u + "/operations/" }},
		{"custom prefix", asyncreply.Config{Prefix: "/jobs/"}, nil,
			func(u string) string { return u + "/jobs/" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.cfg, route("POST /exports", asyncreply.Async(text("done"))))

			r, loc := b.submit(t, http.MethodPost, "/exports", "", tc.header...)

			base := tc.want(b.srv.URL)
			id, ok := strings.CutPrefix(loc, base)
			if !ok || len(id) != 22 {
				t.Fatalf("Location = %q, want %s<id>", loc, base)
			}
			if doc := decodeDoc(t, r); doc.Links.Self != loc || doc.Links.Events != loc+"/events" {
				t.Errorf("links = %+v, want them under %q", doc.Links, loc)
			}
			// Whatever the public origin, the monitor is served at the prefix.
			u, _ := url.Parse(loc)
			if r := b.finish(t, u.Path, tc.header...); r.code != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), base+id) {
				t.Errorf("poll = %s (Location %q), want 303 under %q", r, r.header.Get("Location"), base)
			}
		})
	}
}
