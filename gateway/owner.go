package gateway

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/asyncreply/asyncreply/internal/netaddr"
)

// OwnerCookieName is the name of the cookie the gateway issues for
// OwnerIssuedCookie. The gateway removes it from every request it
// forwards, so the upstream never sees it.
const OwnerCookieName = "asyncreply_owner"

const (
	// whoamiTimeout bounds one question to the upstream in the
	// "upstream:PATH" mode; a slow answer must not hold up a 202 for long.
	whoamiTimeout = 5 * time.Second
	// whoamiTTL is how long the upstream's answer for one credential is
	// believed, so that a poller does not ask it on every poll.
	whoamiTTL = 5 * time.Second
	// whoamiMaxBody caps the principal the upstream may return: a user ID or
	// name, not a page.
	whoamiMaxBody = 1 << 10
	// whoamiCacheSize bounds the credentials remembered at once.
	whoamiCacheSize = 10_000
)

var errAnonymous = errors.New("gateway: the request carries no credential identifying its owner")

// Owner says how the gateway knows the caller an operation is bound to
// (Config.Owner). Build it with OwnerHeader, OwnerCookie,
// OwnerIssuedCookie or OwnerUpstream, or read it from its string form
// with ParseOwner. The zero Owner binds nothing: the unguessable monitor
// URL is the only key to an operation. New and Config.Validate report an
// invalid name or path as a *ConfigError on "Owner".
type Owner struct {
	kind ownerKind
	name string // the header or cookie name, or the upstream path
}

// ownerKind is how an Owner knows the caller. Its value is the mode's name
// in Owner's string form, and is digested into every principal
// (owner.principal): changing one would hide the operations stored before
// from their owners.
type ownerKind string

const (
	ownerNone           ownerKind = ""
	ownerByHeader       ownerKind = "header"
	ownerByCookie       ownerKind = "cookie"
	ownerByIssuedCookie ownerKind = "issue-cookie"
	ownerByUpstream     ownerKind = "upstream"
)

// OwnerHeader binds each operation to the value of the request header
// name ("header:NAME"), for a credential that does not change between
// requests: an API token in Authorization.
func OwnerHeader(name string) Owner {
	return Owner{ownerByHeader, http.CanonicalHeaderKey(name)}
}

// OwnerCookie binds each operation to the value of the cookie name
// ("cookie:NAME"), for a cookie whose value does not change between
// requests. Not a session cookie the application re-issues on every
// response, as Rails' cookie store does.
func OwnerCookie(name string) Owner { return Owner{ownerByCookie, name} }

// OwnerIssuedCookie binds each operation to a cookie the gateway issues
// itself ("issue-cookie"): random, HttpOnly, SameSite=Lax and called
// OwnerCookieName, given on any response to a client without one. Each
// submit's answer also sets a copy scoped to the operation's monitor URL,
// so that the concurrent first requests of a browser, each given a
// different cookie, keep their operations. The upstream never sees them.
func OwnerIssuedCookie() Owner { return Owner{kind: ownerByIssuedCookie} }

// OwnerUpstream binds each operation to the user the upstream says the
// caller is ("upstream:PATH"): the gateway asks it with a GET of path, a
// path on the upstream with an optional query such as "/whoami",
// carrying only the caller's cookies and Authorization; a 2xx answer's
// body is the principal, anything else means anonymous. Answers are
// remembered for a few seconds per credential. It binds to the user,
// across cookie rotations and devices.
func OwnerUpstream(path string) Owner { return Owner{ownerByUpstream, path} }

// ownerSyntax is what ParseOwner reads.
const ownerSyntax = `want "header:NAME", "cookie:NAME", "issue-cookie", "upstream:PATH" or "" (none)`

// ParseOwner reads an Owner from its string form, as the command line and
// the config file give it: "header:NAME", "cookie:NAME", "issue-cookie",
// "upstream:PATH", or "" for none. The error says what is wrong with s.
func ParseOwner(s string) (Owner, error) {
	if s == "" {
		return Owner{}, nil
	}
	kind, arg, hasArg := strings.Cut(s, ":")
	var o Owner
	switch ownerKind(kind) {
	case ownerByHeader:
		o = OwnerHeader(arg)
	case ownerByCookie:
		o = OwnerCookie(arg)
	case ownerByUpstream:
		o = OwnerUpstream(arg)
	case ownerByIssuedCookie:
		if hasArg {
			return Owner{}, fmt.Errorf("%q: issue-cookie takes no argument (%s)", s, ownerSyntax)
		}
		o = OwnerIssuedCookie()
	default:
		return Owner{}, fmt.Errorf("%q: unknown mode (%s)", s, ownerSyntax)
	}
	if err := o.check(); err != nil {
		return Owner{}, err
	}
	return o, nil
}

// String returns o's string form, which ParseOwner reads back.
func (o Owner) String() string {
	switch o.kind {
	case ownerNone, ownerByIssuedCookie:
		return string(o.kind)
	}
	return string(o.kind) + ":" + o.name
}

// check reports what is wrong with o's name or path.
func (o Owner) check() error {
	switch o.kind {
	case ownerByHeader, ownerByCookie:
		if o.name == "" {
			return fmt.Errorf("%q: empty NAME (%s)", o, ownerSyntax)
		}
		if !validToken(o.name) { // header and cookie names are both RFC 9110 tokens
			return fmt.Errorf("%q: %q is not a valid %s name", o, o.name, o.kind)
		}
	case ownerByUpstream:
		u, err := url.Parse(o.name)
		if !strings.HasPrefix(o.name, "/") || strings.HasPrefix(o.name, "//") || err != nil || u.Fragment != "" {
			return fmt.Errorf("%q: PATH must be a path on the upstream starting with \"/\", e.g. upstream:/whoami", o)
		}
	}
	return nil
}

func validToken(s string) bool {
	for i := range len(s) {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}

// owner derives the principal of a request for asyncreply.Config.Owner.
type owner struct {
	mode   Owner
	secret []byte
	whoami *url.URL     // upstream mode: where to ask
	client *http.Client // upstream mode
	cache  *principalCache
	asking singleflight.Group // upstream mode: questions in flight, by credential digest
	// waiting, in tests, is called by each request once it waits for the
	// answer to a question in flight (Config.whoamiWaiting).
	waiting func()
}

func newOwner(mode Owner, cfg *Config, upstream *url.URL) *owner {
	o := &owner{mode: mode, waiting: cfg.whoamiWaiting}
	// The principal leaves the gateway as an HMAC, not as the raw token or
	// cookie, so that no credential is handed to the library (which digests
	// it again before storing it). The key derives from Config.Key: with a
	// Key, a stolen store does not let anyone test guesses of low-entropy
	// credentials against the owners; without one the recorded requests are
	// stored in clear anyway, so a fixed key loses nothing. It is never
	// random per process: owners must survive a restart and be the same in
	// every gateway sharing a backend.
	mac := hmac.New(sha256.New, cfg.Key)
	mac.Write([]byte("asyncreply gateway owner v1"))
	o.secret = mac.Sum(nil)
	if mode.kind == ownerByUpstream {
		ref, _ := url.Parse(mode.name) // checked by Owner.check
		o.whoami = upstream.JoinPath(ref.Path)
		o.whoami.RawQuery = ref.RawQuery
		o.client = &http.Client{
			Transport: cfg.Transport,
			Timeout:   whoamiTimeout,
			// A redirect is the upstream's way of saying "log in": anonymous.
			// Following it would make its login page everyone's principal.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		o.cache = &principalCache{entries: make(map[[32]byte]cachedPrincipal)}
	}
	return o
}

// principal is the asyncreply.Config.Owner function.
func (o *owner) principal(r *http.Request) (string, error) {
	var value string
	switch o.mode.kind {
	case ownerByHeader:
		value = r.Header.Get(o.mode.name)
	case ownerByCookie:
		if c, err := r.Cookie(o.mode.name); err == nil {
			value = c.Value
		}
	case ownerByIssuedCookie:
		value, _ = r.Context().Value(ownerCookieKey{}).(string)
	case ownerByUpstream:
		var err error
		if value, err = o.askUpstream(r); err != nil {
			return "", err
		}
	}
	if value == "" {
		return "", errAnonymous
	}
	mac := hmac.New(sha256.New, o.secret)
	mac.Write([]byte(string(o.mode.kind) + "\x00" + value))
	return hex.EncodeToString(mac.Sum(nil)), nil
}

// askUpstream asks the upstream who sent r, passing on only r's cookies and
// Authorization, and remembers the answer for whoamiTTL per credential: a
// poller does not cost a request to the upstream each time, and since the
// answer is the user and not the cookie, a session cookie the upstream
// rotates on every response (Rails' cookie store) still names the same user.
func (o *owner) askUpstream(r *http.Request) (string, error) {
	cookies, authorization := r.Header.Values("Cookie"), r.Header.Values("Authorization")
	if len(cookies) == 0 && len(authorization) == 0 {
		// Every such caller would look the same to the upstream: whatever it
		// answered would be a principal shared by all of them.
		return "", errAnonymous
	}
	key := sha256.Sum256([]byte(strings.Join(cookies, "\x00") + "\x01" + strings.Join(authorization, "\x00")))
	now := time.Now()
	if p, ok := o.cache.get(key, now); ok {
		if p == "" {
			return "", errAnonymous
		}
		return p, nil
	}
	// Concurrent requests with the same credentials — a page's burst of
	// submits, many pollers — share one question, detached from whichever
	// caller asked first so that its going away does not fail the others.
	answer := o.asking.DoChan(string(key[:]), func() (any, error) {
		return o.ask(context.WithoutCancel(r.Context()), key, cookies, authorization, now)
	})
	if o.waiting != nil {
		o.waiting()
	}
	res := <-answer
	if res.Err != nil {
		return "", res.Err
	}
	if res.Val.(string) == "" {
		return "", errAnonymous
	}
	return res.Val.(string), nil
}

// ask puts the question of askUpstream to the upstream and remembers the
// answer; "" is anonymous.
func (o *owner) ask(ctx context.Context, key [32]byte, cookies, authorization []string, now time.Time) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, whoamiTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.whoami.String(), nil)
	if err != nil {
		return "", fmt.Errorf("gateway: asking the upstream who the caller is: %w", err)
	}
	for _, c := range cookies {
		req.Header.Add("Cookie", c)
	}
	for _, a := range authorization {
		req.Header.Add("Authorization", a)
	}
	req.Header.Set("Accept", "text/plain")
	// A fresh connection, closed after the answer: an app server such as
	// Puma keeps a thread waiting for a keep-alive connection's next request
	// (200 ms in Puma 5), so that with most threads busy replaying, questions
	// sent over kept-alive connections queue behind one another and a 202
	// would wait on the upstream. Questions are rare — answers are
	// remembered — so the extra connection costs little.
	req.Close = true
	resp, err := o.client.Do(req)
	if err != nil {
		// Not remembered: the next request asks again.
		return "", fmt.Errorf("gateway: asking the upstream who the caller is: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, whoamiMaxBody+1))
	if err != nil {
		return "", fmt.Errorf("gateway: reading the upstream's answer to who the caller is: %w", err)
	}
	principal := ""
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if len(body) > whoamiMaxBody {
			return "", fmt.Errorf("gateway: the upstream's answer to who the caller is exceeds %d bytes", whoamiMaxBody)
		}
		principal = strings.TrimSpace(string(body))
	}
	o.cache.put(key, principal, now.Add(whoamiTTL))
	return principal, nil
}

// principalCache remembers the upstream's answers per credential digest; ""
// remembers an anonymous caller.
type principalCache struct {
	mu      sync.Mutex
	entries map[[32]byte]cachedPrincipal
}

type cachedPrincipal struct {
	principal string
	expires   time.Time
}

func (c *principalCache) get(key [32]byte, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !now.Before(e.expires) {
		return "", false
	}
	return e.principal, true
}

func (c *principalCache) put(key [32]byte, principal string, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= whoamiCacheSize {
		for k, e := range c.entries {
			if !time.Now().Before(e.expires) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries { // still full: forget any one
			if len(c.entries) < whoamiCacheSize {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = cachedPrincipal{principal, expires}
}

// ownerCookieKey is the context key of the OwnerCookieName value in the
// "issue-cookie" mode.
type ownerCookieKey struct{}

// ownerCookieLength is the length of an issued owner cookie: 128 bits from
// crypto/rand, base64url.
const ownerCookieLength = 22

// Concurrent first requests. The "issue-cookie" mode must survive the first visit of a browser that
// fires several requests at once: each arrives without a cookie, each
// answer sets a different one, and the browser keeps the last — so that an
// operation bound to any other would be lost to the very client that
// submitted it. Two things make a client's operations converge on it:
//
//   - The gateway issues OwnerCookieName on every response to a client
//     without one, pass-through included (bindOwnerCookie), so that the
//     page a browser loads first gives it the cookie before its first
//     asynchronous request, and every operation after is bound to that one
//     value.
//   - A submit's answer also carries operationOwnerCookie, with the value
//     the operation is bound to and the operation's monitor URL as its Path,
//     and a monitor request believes it before OwnerCookieName. The browser
//     keeps one such cookie per operation (a cookie is known by its name
//     and path), and sends each only to its own operation's URLs, so an
//     operation stays readable by its submitter even when a concurrent
//     answer to a request sent without a cookie replaced OwnerCookieName.
//     Each lives as long as its operation; a browser over its cookie limit
//     for the site drops the least recently used first, which are those of
//     operations long finished and unread.

// operationOwnerCookie is the cookie that holds, scoped by its Path to one
// operation's monitor URL, the owner value that operation is bound to: the
// second point above.
const operationOwnerCookie = OwnerCookieName + "_op"

// bindOwnerCookie handles the "issue-cookie" mode for a request. It takes
// the gateway's cookies out of the request, so that they are neither
// recorded nor replayed to the upstream, and puts the owner value in the
// context for owner.principal: on a monitor request, operationOwnerCookie's
// when the client has it, else OwnerCookieName's. A client without
// OwnerCookieName gets a new one; every request to an async route gets it
// again, so that it lives as long as the operations it binds. Outside the
// monitor URLs, where a request may become an operation (an async route,
// or one the application defers), the returned writer adds the operation's
// own cookie to the answer that names its monitor URL.
func (g *Gateway) bindOwnerCookie(w http.ResponseWriter, r *http.Request, monitor, asyncRoute bool) (http.ResponseWriter, *http.Request) {
	value, found := cookieValue(r.Header, OwnerCookieName)
	if !validOwnerValue(value) {
		value = ""
	}
	operationValue, operationFound := cookieValue(r.Header, operationOwnerCookie)
	if monitor && validOwnerValue(operationValue) {
		value = operationValue
	}
	if found || operationFound {
		// The header is changed below, not the caller's: a copy of the map
		// is enough, since stripCookie replaces the Cookie lines rather
		// than editing them. This runs on every request that carries the
		// cookie, pass-through included.
		header := copyHeader(r.Header, nil)
		stripCookie(header, OwnerCookieName)
		stripCookie(header, operationOwnerCookie)
		r = withHeader(r, header)
	}
	issued := value == ""
	if issued {
		value = randomToken()
	}
	if issued || asyncRoute {
		http.SetCookie(w, g.ownerCookie(r, OwnerCookieName, value, "/"))
	}
	if !monitor {
		w = &operationCookieWriter{ResponseWriter: w, g: g, cookie: g.ownerCookie(r, operationOwnerCookie, value, "")}
	}
	return w, r.WithContext(context.WithValue(r.Context(), ownerCookieKey{}, value))
}

// randomToken is 128 bits from crypto/rand, base64url: an issued owner
// cookie's value, a progress URL's token.
func randomToken() string {
	var b [16]byte
	rand.Read(b[:]) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// copyHeader returns a copy of h's map, without the names drop reports
// (none when nil). The values are shared, not copied: whoever changes the
// copy replaces a name's values rather than editing them.
func copyHeader(h http.Header, drop func(name string) bool) http.Header {
	header := make(http.Header, len(h))
	for name, values := range h {
		if drop == nil || !drop(name) {
			header[name] = values
		}
	}
	return header
}

// withHeader returns a shallow copy of r with header in place of its own:
// the caller's request is not the gateway's to change.
func withHeader(r *http.Request, header http.Header) *http.Request {
	shallow := *r
	shallow.Header = header
	return &shallow
}

// validOwnerValue reports whether value could have been issued by
// randomToken; anything else a client sends is treated as no cookie.
func validOwnerValue(value string) bool {
	if len(value) != ownerCookieLength {
		return false
	}
	var b [16]byte // on the stack: this runs on every pass-through request
	_, err := base64.RawURLEncoding.Decode(b[:], []byte(value))
	return err == nil
}

// ownerCookie is one of the gateway's cookies: HttpOnly, SameSite=Lax,
// Secure when the client reached the gateway over HTTPS, and kept as long
// as the longest-lived operation it may bind.
func (g *Gateway) ownerCookie(r *http.Request, name, value, path string) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     path,
		MaxAge:   int(g.ownerCookieMaxAge / time.Second),
		HttpOnly: true,
		Secure:   g.secure(r),
		SameSite: http.SameSiteLaxMode,
	}
}

// ownerCookieMaxAge is how long an owner cookie is kept: as long as the
// longest-lived operation of any route, from its submit to its expiry.
func ownerCookieMaxAge(cfg *Config) time.Duration {
	longest := cmp.Or(cfg.Retention, DefaultRetention) + cmp.Or(cfg.Timeout, DefaultTimeout)
	for _, route := range cfg.Async {
		longest = max(longest, cmp.Or(route.Retention, cfg.Retention, DefaultRetention)+cmp.Or(route.Timeout, cfg.Timeout, DefaultTimeout))
	}
	return longest
}

// operationCookieWriter is the ResponseWriter of a submit in the
// "issue-cookie" mode: when the answer names its operation, in a Location
// under the monitor prefix (a 202, or the answer of an inline operation),
// it adds cookie, scoped to that operation's monitor URL.
type operationCookieWriter struct {
	http.ResponseWriter
	g           *Gateway
	cookie      *http.Cookie
	wroteHeader bool
}

func (w *operationCookieWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.wroteHeader = true
		if path := w.g.operationPath(w.Header().Get("Location")); path != "" {
			w.cookie.Path = path
			http.SetCookie(w.ResponseWriter, w.cookie)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *operationCookieWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *operationCookieWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// operationPath is the path of the operation's monitor URL as the client
// sees it, PublicURL's path included, taken from location, a monitor URL or
// one under it; "" when location is none of these.
func (g *Gateway) operationPath(location string) string {
	u, err := url.Parse(location)
	if err != nil {
		return ""
	}
	i := strings.Index(u.Path, g.cfg.Prefix)
	if i < 0 {
		return ""
	}
	id, _, _ := strings.Cut(u.Path[i+len(g.cfg.Prefix):], "/")
	if id == "" {
		return ""
	}
	return u.Path[:i+len(g.cfg.Prefix)] + id
}

// secure reports whether the client reached the gateway over HTTPS.
func (g *Gateway) secure(r *http.Request) bool {
	if r.TLS != nil || strings.HasPrefix(g.cfg.PublicURL, "https:") {
		return true
	}
	return netaddr.Trusted(r.RemoteAddr, g.cfg.TrustedProxies) && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// cookieValue returns the value of the first cookie called name in h's
// Cookie headers, and whether there is one. It allocates nothing: it runs on
// every pass-through request in the "issue-cookie" mode.
func cookieValue(h http.Header, name string) (value string, found bool) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			if n, v, _ := strings.Cut(strings.TrimSpace(part), "="); n == name {
				return strings.Trim(v, `"`), true
			}
		}
	}
	return "", false
}

// stripCookie removes every cookie called name from h's Cookie headers,
// leaving the others as they were.
// stripCookie never edits h's Cookie lines in place: bindOwnerCookie
// shares them with the caller's request.
func stripCookie(h http.Header, name string) {
	if _, found := cookieValue(h, name); !found {
		return
	}
	lines := h["Cookie"]
	kept := lines[:0:0]
	for _, line := range lines {
		parts := strings.Split(line, ";")
		keep := parts[:0]
		for _, part := range parts {
			part = strings.TrimSpace(part)
			if n, _, _ := strings.Cut(part, "="); n != name && part != "" {
				keep = append(keep, part)
			}
		}
		if len(keep) > 0 {
			kept = append(kept, strings.Join(keep, "; "))
		}
	}
	if len(kept) == 0 {
		h.Del("Cookie")
	} else {
		h["Cookie"] = kept
	}
}
