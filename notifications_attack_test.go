package asyncreply_test

import (
	"net/http"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/memory"
)

// Prefer: callback URLs made to pass a host check by a parser that reads
// them differently — user information naming the allowed host, a fragment
// or query hiding the real one, the allowed host as a subdomain, the
// address in decimal, hex, octal or short form, IPv4-mapped IPv6, another
// scheme, a relative reference, a backslash — are all ignored when only
// 127.0.0.1 is allowed: none is echoed, so none is ever dialed.
func TestCallbackURLTricksAreIgnored(t *testing.T) {
	t.Parallel()
	cfg := notifyConfig(memory.New(memory.Config{})) // allows 127.0.0.1 alone
	b := setup(t, cfg, route("/report", asyncreply.Async(text("done"))))
	for _, u := range []string{
		"http://127.0.0.1@evil.example/hook",
		"http://127.0.0.1:80@evil.example/hook",
		"http://evil.example#@127.0.0.1/hook",
		"http://evil.example?@127.0.0.1/hook",
		`http://evil.example\@127.0.0.1/hook`,
		"http://127.0.0.1.evil.example/hook",
		"http://127.0.0.1%2F@evil.example/hook",
		"http://2130706433/hook",
		"http://0x7f000001/hook",
		"http://017700000001/hook",
		"http://0x7f.0.0.1/hook",
		"http://127.1/hook",
		"http://[::ffff:127.0.0.1]/hook",
		"http://[::ffff:7f00:1]/hook",
		"http://１２７.０.０.１/hook",
		"ftp://127.0.0.1/hook",
		"file://127.0.0.1/etc/passwd",
		"javascript:alert(1)//127.0.0.1",
		"//127.0.0.1/hook",
		"/hook",
		"http:///127.0.0.1/hook",
	} {
		r := b.do(t, http.MethodPost, "/report", "", "Prefer", callbackPrefer(u))
		if r.code != http.StatusAccepted {
			t.Errorf("callback %q: submit = %s, want 202", u, r)
		}
		if headerHas(r.header, "Preference-Applied", "callback") {
			t.Errorf("callback %q was accepted, with only 127.0.0.1 allowed", u)
		}
	}
	// The allowed host itself, in any case, is accepted.
	if r := b.do(t, http.MethodPost, "/report", "", "Prefer", callbackPrefer("http://127.0.0.1:1/hook")); !headerHas(r.header, "Preference-Applied", "callback") {
		t.Errorf("the allowed host's callback was ignored: Preference-Applied %q", r.header.Values("Preference-Applied"))
	}
}
