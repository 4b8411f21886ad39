package gateway_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/asyncreply/asyncreply/gateway"
)

// unknownID is a well-formed operation ID that no operation has.
const unknownID = "AAAAAAAAAAAAAAAAAAAAAA"

// as adds a caller's credentials to a request.
type as func(*http.Request)

func withHeader(name, value string) as {
	return func(r *http.Request) { r.Header.Set(name, value) }
}

func withCookie(name, value string) as {
	return func(r *http.Request) { r.AddCookie(&http.Cookie{Name: name, Value: value}) }
}

func (b *bundle) send(t *testing.T, method, rawURL string, who as, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if who != nil {
		who(req)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.do(t, req)
}

// submit sends GET /report as who and returns the monitor URL of the 202.
func (b *bundle) submit(t *testing.T, who as) (string, *http.Response) {
	t.Helper()
	resp, body := b.send(t, http.MethodGet, b.gateway.URL+"/report", who)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s, want 202", resp.StatusCode, body)
	}
	return resp.Header.Get("Location"), resp
}

// resultAs polls monitor as who until it redirects, and returns the body of
// the response it leads to.
func (b *bundle) resultAs(t *testing.T, monitor string, who as) string {
	t.Helper()
	for {
		resp, body := b.send(t, http.MethodGet, monitor, who, "Prefer", "wait=10")
		switch resp.StatusCode {
		case http.StatusAccepted:
			continue
		case http.StatusSeeOther:
			next, err := url.Parse(monitor)
			if err != nil {
				t.Fatal(err)
			}
			next, err = next.Parse(resp.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			resp, body = b.send(t, http.MethodGet, next.String(), who)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("response: %d %s", resp.StatusCode, body)
			}
			return body
		default:
			t.Fatalf("poll: %d %s", resp.StatusCode, body)
		}
	}
}

// assertHidden checks that every monitor URL of the operation at monitor
// answers who exactly as it answers for an operation that does not exist.
func (b *bundle) assertHidden(t *testing.T, monitor string, who as) {
	t.Helper()
	unknown := monitor[:strings.LastIndex(monitor, "/")+1] + unknownID
	for _, probe := range []struct{ method, suffix string }{
		{http.MethodGet, ""}, {http.MethodGet, "/response"}, {http.MethodGet, "/events"}, {http.MethodDelete, ""},
	} {
		want, wantBody := b.send(t, probe.method, unknown+probe.suffix, who)
		got, gotBody := b.send(t, probe.method, monitor+probe.suffix, who)
		if got.StatusCode != http.StatusNotFound || got.StatusCode != want.StatusCode || gotBody != wantBody ||
			got.Header.Get("Content-Type") != want.Header.Get("Content-Type") {
			t.Errorf("%s %s by another caller: %d %q, want %d %q as for an unknown ID",
				probe.method, probe.suffix, got.StatusCode, gotBody, want.StatusCode, wantBody)
		}
	}
}

// whoUpstream is an upstream whose /report answers with the user its
// /whoami names, and which records every Cookie header it receives.
type whoUpstream struct {
	users   map[string]string // session cookie value → user
	whoami  atomic.Int64      // calls of /whoami
	mu      sync.Mutex
	cookies []string
	whoHdrs []http.Header
}

func (u *whoUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.cookies = append(u.cookies, r.Header.Values("Cookie")...)
	if r.URL.Path == "/whoami" {
		u.whoHdrs = append(u.whoHdrs, r.Header.Clone())
	}
	u.mu.Unlock()
	user := ""
	if c, err := r.Cookie("session"); err == nil {
		user = u.users[c.Value]
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		user = u.users[strings.TrimPrefix(auth, "Bearer ")]
	}
	if user == "" && r.Header.Get("X-Token") != "" {
		user = u.users[r.Header.Get("X-Token")]
	}
	switch r.URL.Path {
	case "/whoami":
		u.whoami.Add(1)
		if user == "" {
			http.Error(w, "log in", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, user+"\n")
	case "/login":
		http.Redirect(w, r, "/sign_in", http.StatusFound)
	case "/sign_in":
		io.WriteString(w, "<html>the login page, the same for everyone</html>")
	default:
		io.WriteString(w, "report for "+user)
	}
}

func (u *whoUpstream) seenCookies() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.cookies...)
}

func newWhoUpstream() *whoUpstream {
	return &whoUpstream{users: map[string]string{
		"a1": "alice", "a2": "alice", "a3": "alice", // Alice's session cookie, rotated
		"b1": "bob", "tok-a": "alice", "tok-b": "bob",
	}}
}

func TestOwnerHidesOperationsFromOtherCallers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode           gateway.Owner
		alice, bob     as
		aliceAgain     as // Alice later, e.g. with a rotated cookie
		nobody         as // a caller the mode cannot identify
		wantAliceReply string
	}{
		{gateway.OwnerHeader("X-Token"), withHeader("X-Token", "tok-a"), withHeader("X-Token", "tok-b"), withHeader("X-Token", "tok-a"), nil, "report for alice"},
		{gateway.OwnerHeader("authorization"), withHeader("Authorization", "Bearer tok-a"), withHeader("Authorization", "Bearer tok-b"), withHeader("Authorization", "Bearer tok-a"), withHeader("X-Token", "tok-a"), "report for alice"},
		{gateway.OwnerCookie("session"), withCookie("session", "a1"), withCookie("session", "b1"), withCookie("session", "a1"), withCookie("other", "a1"), "report for alice"},
		{gateway.OwnerUpstream("/whoami"), withCookie("session", "a1"), withCookie("session", "b1"), withCookie("session", "a3"), withCookie("session", "stranger"), "report for alice"},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			t.Parallel()
			b := setup(t, newWhoUpstream(), gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}, Owner: tc.mode})
			monitor, _ := b.submit(t, tc.alice)
			b.assertHidden(t, monitor, tc.bob)
			b.assertHidden(t, monitor, tc.nobody)
			if got := b.resultAs(t, monitor, tc.aliceAgain); got != tc.wantAliceReply {
				t.Errorf("Alice's result: %q, want %q", got, tc.wantAliceReply)
			}
			if resp, body := b.send(t, http.MethodGet, b.gateway.URL+"/report", tc.nobody); resp.StatusCode != http.StatusForbidden {
				t.Errorf("submit by an unidentified caller: %d %s, want 403", resp.StatusCode, body)
			}
		})
	}
}

func TestWithoutOwnerTheURLIsTheKey(t *testing.T) {
	t.Parallel()
	b := setup(t, newWhoUpstream(), gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}})
	monitor, _ := b.submit(t, withCookie("session", "a1"))
	if got := b.resultAs(t, monitor, nil); got != "report for alice" {
		t.Errorf("result by anyone holding the URL: %q", got)
	}
}

func ownerCookieOf(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == gateway.OwnerCookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %q", gateway.OwnerCookieName, resp.Header.Values("Set-Cookie"))
	return nil
}

func TestIssueCookie(t *testing.T) {
	t.Parallel()
	up := newWhoUpstream()
	b := setup(t, up, gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}, Owner: gateway.OwnerIssuedCookie()})

	// Alice submits with her session but no owner cookie: the 202 issues one.
	monitor, resp := b.submit(t, withCookie("session", "a1"))
	issued := ownerCookieOf(t, resp)
	if !issued.HttpOnly || issued.SameSite != http.SameSiteLaxMode || issued.Path != "/" || issued.Secure || issued.MaxAge <= 0 || len(issued.Value) < 22 {
		t.Errorf("issued cookie %q: want HttpOnly, SameSite=Lax, Path=/, not Secure over http, a lifetime, 128 random bits", resp.Header.Values("Set-Cookie"))
	}
	alice := func(r *http.Request) {
		r.AddCookie(&http.Cookie{Name: "session", Value: "a2"})
		r.AddCookie(&http.Cookie{Name: gateway.OwnerCookieName, Value: issued.Value})
	}
	b.assertHidden(t, monitor, nil)                                                           // no cookie at all
	b.assertHidden(t, monitor, withCookie("session", "a1"))                                   // Alice's session alone is not the key
	b.assertHidden(t, monitor, withCookie(gateway.OwnerCookieName, "BBBBBBBBBBBBBBBBBBBBBB")) // someone else's owner cookie
	if got := b.resultAs(t, monitor, alice); got != "report for alice" {
		t.Errorf("Alice's result: %q", got)
	}

	// Bob submits and gets a different cookie; Alice's operation is hidden from him.
	_, resp = b.submit(t, withCookie("session", "b1"))
	bobs := ownerCookieOf(t, resp)
	if bobs.Value == issued.Value {
		t.Fatal("Bob was issued Alice's cookie")
	}
	b.assertHidden(t, monitor, withCookie(gateway.OwnerCookieName, bobs.Value))

	// A client with the cookie keeps it: the same value again.
	second, resp := b.submit(t, alice)
	if again := ownerCookieOf(t, resp); again.Value != issued.Value {
		t.Errorf("a submit with the owner cookie got a new one: %q, had %q", again.Value, issued.Value)
	}
	if got := b.resultAs(t, second, alice); got != "report for alice" { // replayed before the check below
		t.Errorf("Alice's second result: %q", got)
	}

	// Pass-through with the cookie: the upstream sees the app's cookies, never the gateway's.
	if resp, body := b.send(t, http.MethodGet, b.gateway.URL+"/other", alice); resp.StatusCode != http.StatusOK || body != "report for alice" {
		t.Errorf("pass-through: %d %q", resp.StatusCode, body)
	}
	for _, c := range up.seenCookies() {
		if strings.Contains(c, gateway.OwnerCookieName) {
			t.Errorf("the upstream saw the gateway's cookie: %q", c)
		}
		if !strings.Contains(c, "session=") {
			t.Errorf("the upstream lost the application's cookie: %q", c)
		}
	}
}

func TestIssueCookieIsSecureBehindHTTPS(t *testing.T) {
	t.Parallel()
	b := setup(t, newWhoUpstream(), gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}, Owner: gateway.OwnerIssuedCookie(), PublicURL: "https://app.example"})
	_, resp := b.submit(t, nil)
	if c := ownerCookieOf(t, resp); !c.Secure {
		t.Errorf("cookie issued for an https public URL is not Secure: %q", resp.Header.Values("Set-Cookie"))
	}
}

func TestIssueCookieIsSecureBehindTrustedHTTPSProxy(t *testing.T) {
	t.Parallel()
	b := setup(t, newWhoUpstream(), gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}, Owner: gateway.OwnerIssuedCookie(), TrustedProxies: mustPrefixes(t, "127.0.0.1/32")})
	resp, body := b.send(t, http.MethodGet, b.gateway.URL+"/report", nil, "X-Forwarded-Proto", "https")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.StatusCode, body)
	}
	if c := ownerCookieOf(t, resp); !c.Secure {
		t.Errorf("cookie issued behind a trusted https proxy is not Secure: %q", resp.Header.Values("Set-Cookie"))
	}
}

func TestUpstreamOwnerSurvivesCookieRotationAndIsCached(t *testing.T) {
	t.Parallel()
	up := newWhoUpstream()
	b := setup(t, up, gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}, Owner: gateway.OwnerUpstream("/whoami")})
	monitor, _ := b.submit(t, func(r *http.Request) {
		r.AddCookie(&http.Cookie{Name: "session", Value: "a1"})
		r.Header.Set("X-Private", "not for whoami")
	})
	// Rails re-issued the session cookie: Alice polls with a2, then a3.
	if got := b.resultAs(t, monitor, withCookie("session", "a2")); got != "report for alice" {
		t.Errorf("Alice's result after rotation: %q", got)
	}
	const polls = 20
	before := up.whoami.Load()
	for range polls {
		if resp, body := b.send(t, http.MethodGet, monitor, withCookie("session", "a3")); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("poll with rotated cookie: %d %s", resp.StatusCode, body)
		}
	}
	if calls := up.whoami.Load() - before; calls > 3 {
		t.Errorf("%d polls with one cookie asked /whoami %d times; want it cached", polls, calls)
	}
	up.mu.Lock()
	for _, h := range up.whoHdrs {
		for name := range h {
			switch name {
			case "Cookie", "Authorization", "Accept", "Accept-Encoding", "User-Agent", "Connection":
			default:
				t.Errorf("/whoami received the caller's %s header", name)
			}
		}
	}
	up.mu.Unlock()
}

func TestUpstreamOwnerAnonymousIsForbidden(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		mode gateway.Owner
		who  as
	}{
		"401 from whoami": {gateway.OwnerUpstream("/whoami"), withCookie("session", "stranger")},
		"no credentials":  {gateway.OwnerUpstream("/whoami"), nil},
		"redirect":        {gateway.OwnerUpstream("/login"), withCookie("session", "stranger")},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, newWhoUpstream(), gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}, Owner: tc.mode})
			if resp, body := b.send(t, http.MethodGet, b.gateway.URL+"/report", tc.who); resp.StatusCode != http.StatusForbidden {
				t.Errorf("submit: %d %s, want 403", resp.StatusCode, body)
			}
		})
	}
}

func TestUpstreamOwnerUnreachableIsForbidden(t *testing.T) {
	t.Parallel()
	b := setup(t, newWhoUpstream(), gateway.Config{Upstream: deadUpstream(t), Async: []gateway.Route{{Pattern: "GET /report"}}, Owner: gateway.OwnerUpstream("/whoami")})
	if resp, body := b.send(t, http.MethodGet, b.gateway.URL+"/report", withCookie("session", "a1")); resp.StatusCode != http.StatusForbidden {
		t.Errorf("submit with the upstream down: %d %s, want 403", resp.StatusCode, body)
	}
}

func TestParseOwner(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode string
		want gateway.Owner
	}{
		{"", gateway.Owner{}},
		{"header:X-Api-Token", gateway.OwnerHeader("X-Api-Token")},
		{"cookie:remember_token", gateway.OwnerCookie("remember_token")},
		{"issue-cookie", gateway.OwnerIssuedCookie()},
		{"upstream:/whoami", gateway.OwnerUpstream("/whoami")},
		{"upstream:/api/me?format=text", gateway.OwnerUpstream("/api/me?format=text")},
	} {
		got, err := gateway.ParseOwner(tc.mode)
		if err != nil || got != tc.want {
			t.Errorf("ParseOwner(%q) = %v, %v; want %v", tc.mode, got, err, tc.want)
		}
		if got.String() != tc.mode {
			t.Errorf("ParseOwner(%q).String() = %q, want it back", tc.mode, got.String())
		}
	}
	if got := gateway.OwnerHeader("x-api-token").String(); got != "header:X-Api-Token" {
		t.Errorf("OwnerHeader(\"x-api-token\").String() = %q, want the canonical name", got)
	}
}

func TestInvalidOwnerIsAConfigError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode string
		want string
	}{
		{"bogus", "unknown mode"}, {"header", "empty NAME"}, {"Header:X", "unknown mode"},
		{"header:", "empty NAME"}, {"cookie:", "empty NAME"}, {"header:X Token", "not a valid header name"},
		{"cookie:a;b", "not a valid cookie name"}, {"issue-cookie:x", "no argument"},
		{"upstream:whoami", `starting with "/"`}, {"upstream:", `starting with "/"`}, {"upstream://evil.example/x", `starting with "/"`},
	} {
		if _, err := gateway.ParseOwner(tc.mode); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.mode) {
			t.Errorf("ParseOwner(%q): got %v, want an error saying %q", tc.mode, err, tc.want)
		}
	}
	// The same names, built in Go rather than parsed, are New's to refuse.
	for _, tc := range []struct {
		owner gateway.Owner
		want  string
	}{
		{gateway.OwnerHeader(""), "empty NAME"}, {gateway.OwnerCookie(""), "empty NAME"},
		{gateway.OwnerHeader("X Token"), "not a valid header name"}, {gateway.OwnerCookie("a;b"), "not a valid cookie name"},
		{gateway.OwnerUpstream("whoami"), `starting with "/"`}, {gateway.OwnerUpstream("//evil.example/x"), `starting with "/"`},
	} {
		err := gateway.Config{Upstream: "http://127.0.0.1:3000", Owner: tc.owner}.Validate()
		var ce *gateway.ConfigError
		if !errors.As(err, &ce) || ce.Field != "Owner" || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.owner.String()) {
			t.Errorf("Owner %v: got %v, want a ConfigError for Owner saying %q", tc.owner, err, tc.want)
		}
		if _, err := gateway.New(gateway.Config{Upstream: "http://127.0.0.1:3000", Owner: tc.owner}); !errors.As(err, &ce) || ce.Field != "Owner" {
			t.Errorf("New with Owner %v: got %v, want a ConfigError for Owner", tc.owner, err)
		}
	}
}

func TestUpstreamOwnerAsksOnceForConcurrentCallers(t *testing.T) {
	t.Parallel()
	var asked atomic.Int32
	var keptAlive atomic.Bool
	release := make(chan struct{})
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/whoami" {
			io.WriteString(w, "report")
			return
		}
		asked.Add(1)
		keptAlive.Store(keptAlive.Load() || !r.Close)
		<-release
		io.WriteString(w, "alice")
	})
	const callers = 10
	waiting := make(chan struct{}, callers)
	b := setup(t, up, gateway.WithWhoamiWaiter(
		gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}, Owner: gateway.OwnerUpstream("/whoami")},
		func() { waiting <- struct{}{} },
	))

	codes := make(chan int, callers)
	for range callers {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, b.gateway.URL+"/report", nil)
			withCookie("session", "a1")(req)
			resp, err := b.client.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	// The answer is held until every caller waits for it: none finds it
	// remembered, so each would ask the upstream if questions were not
	// shared.
	for range callers {
		<-waiting
	}
	close(release)
	for range callers {
		if code := <-codes; code != http.StatusAccepted {
			t.Errorf("submit = %d, want 202", code)
		}
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("%d concurrent submits with one cookie asked /whoami %d times, want once", callers, n)
	}
	if keptAlive.Load() {
		t.Error("/whoami was asked over a kept-alive connection; want Connection: close, so the app's thread is free at once")
	}
}

// browser is a client with a cookie jar, as a browser keeps cookies: by
// name, domain and path, the last one set winning.
func (b *bundle) browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: b.client.Transport, Jar: jar, CheckRedirect: b.client.CheckRedirect}
}

func getAs(t *testing.T, c *http.Client, rawURL string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestIssueCookieConcurrentFirstSubmitsStayWithTheirClient(t *testing.T) {
	t.Parallel()
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			http.SetCookie(w, &http.Cookie{Name: "app", Value: "1", Path: "/"})
			http.SetCookie(w, &http.Cookie{Name: "theme", Value: "dark", Path: "/"})
			io.WriteString(w, "the page")
			return
		}
		io.WriteString(w, "report")
	})
	for name, firstPageView := range map[string]bool{"after a first page view": true, "as the very first requests": false} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, upstream, gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}, Owner: gateway.OwnerIssuedCookie()})
			alice, bob := b.browser(t), b.browser(t)
			if firstPageView {
				resp, _ := getAs(t, alice, b.gateway.URL+"/")
				if c := ownerCookieOf(t, resp); !c.HttpOnly || c.Path != "/" {
					t.Errorf("owner cookie issued on a pass-through: %q", resp.Header.Values("Set-Cookie"))
				}
				if got := resp.Header.Values("Set-Cookie"); len(got) != 3 || !slices.Contains(got, "app=1; Path=/") || !slices.Contains(got, "theme=dark; Path=/") {
					t.Errorf("Set-Cookie %q: want the upstream's two cookies beside the owner cookie", got)
				}
				if resp, _ := getAs(t, alice, b.gateway.URL+"/"); len(resp.Header.Values("Set-Cookie")) != 2 {
					t.Errorf("a client holding the owner cookie was issued cookies %q, want only the upstream's", resp.Header.Values("Set-Cookie"))
				}
			}
			getAs(t, bob, b.gateway.URL+"/")

			const submits = 20
			monitors := make(chan string, submits)
			var wg sync.WaitGroup
			for range submits {
				wg.Go(func() {
					resp, err := alice.Get(b.gateway.URL + "/report")
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						t.Errorf("submit: %d, want 202", resp.StatusCode)
						return
					}
					monitors <- resp.Header.Get("Location")
				})
			}
			wg.Wait()
			close(monitors)
			readable := 0
			for monitor := range monitors {
				resp, body := getAs(t, bob, monitor)
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("another client's poll: %d %s, want 404", resp.StatusCode, body)
				}
				resp, body = getAs(t, alice, monitor, "Prefer", "wait=10")
				for resp.StatusCode == http.StatusAccepted {
					resp, body = getAs(t, alice, monitor, "Prefer", "wait=10")
				}
				if resp.StatusCode != http.StatusSeeOther {
					t.Errorf("the submitting client's poll: %d %s, want 303", resp.StatusCode, body)
					continue
				}
				if resp, body = getAs(t, alice, monitor+"/response"); resp.StatusCode != http.StatusOK || body != "report" {
					t.Errorf("the submitting client's response: %d %q", resp.StatusCode, body)
					continue
				}
				readable++
			}
			if readable != submits {
				t.Errorf("%d of %d concurrent submits readable by the client that made them", readable, submits)
			}
		})
	}
}
