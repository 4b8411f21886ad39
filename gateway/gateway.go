// Package gateway puts asynchronous responses in front of any HTTP
// application, in any language, with no change to its code: a reverse proxy
// to an upstream server in which the routes matching Config.Async become
// asynchronous through asyncreply's replay model.
//
// A request to an asynchronous route is recorded and answered 202 Accepted
// with a monitor URL; a worker later replays the recorded request — method,
// path, query, headers, cookies, body — to the upstream, with the
// X-Forwarded-* headers of the original client and an Asyncreply-Operation
// header naming the operation, and stores the upstream's response for the
// client to collect; a response that breaks off before its end fails the
// operation with 502 instead. Every other request is proxied unchanged,
// streaming, server-sent events and WebSocket upgrades included.
package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/netaddr"
	"github.com/asyncreply/asyncreply/internal/problem"
	"github.com/asyncreply/asyncreply/notify"
)

// OperationHeader is the request header that tells the upstream which
// operation a replayed request belongs to. The gateway sets it on replays
// and strips it from what clients send, in every spelling an application
// server could read as it (Asyncreply_Operation, any case), so that its
// presence means a replay.
const OperationHeader = "Asyncreply-Operation"

// Defaults of Config's fields.
const (
	// DefaultConcurrency leaves room for the application's synchronous
	// routes: a Rails app on Puma's default of 5 threads (or a Django app on
	// a handful of workers) keeps at least one thread free for them even
	// while every replay is running.
	DefaultConcurrency = 4

	// DefaultMaxIdleConnsPerHost sizes the pool of connections to the
	// upstream for load; http.DefaultTransport keeps only 2 idle per host,
	// so a busy gateway would open and close connections constantly.
	DefaultMaxIdleConnsPerHost = 256

	DefaultPrefix             = asyncreply.DefaultPrefix
	DefaultRetention          = asyncreply.DefaultRetention
	DefaultTimeout            = asyncreply.DefaultTimeout
	DefaultWait               = time.Duration(0)
	DefaultMaxWatches         = asyncreply.DefaultMaxWatches
	DefaultMaxWatchesPerOwner = asyncreply.DefaultMaxWatchesPerOwner
)

// Config configures a Gateway. Upstream is required; every other field is
// optional.
type Config struct {
	// Upstream is the absolute http or https URL of the application the
	// gateway forwards to, e.g. "http://127.0.0.1:3000". A path in it is
	// prefixed to every forwarded path. Required: there is no default.
	Upstream string

	// Async are the routes made asynchronous. A request matching none of
	// them is proxied unchanged. Defaults to none: every route is proxied
	// unchanged.
	Async []Route

	// Backend stores and executes operations. The Gateway owns it: it starts
	// with Handler and stops in Shutdown. Defaults to an in-memory backend
	// executing Concurrency operations at once, whose operations are lost
	// when the process exits.
	Backend backend.Backend

	// Concurrency bounds how many replays run against the upstream at once
	// in the in-memory backend the gateway creates when Backend is nil. A
	// Backend given here is bounded where it is created
	// (memory.Config.Concurrency, backendurl.Options.Concurrency), and New
	// refuses a Concurrency beside it, which would not apply. Defaults to
	// DefaultConcurrency.
	Concurrency int

	// Wait is how long a request to an asynchronous route waits for its
	// answer before falling back to 202 Accepted. Defaults to DefaultWait
	// (0: answer 202 at once).
	Wait time.Duration

	// Timeout bounds one replay; an operation that runs longer fails with
	// 504. Defaults to DefaultTimeout.
	Timeout time.Duration

	// Retention is how long a finished operation and its response are kept.
	// Defaults to DefaultRetention.
	Retention time.Duration

	// Prefix is the path of the monitor URLs; it must start and end with
	// "/" and must not be a path of the upstream application. Defaults to
	// DefaultPrefix.
	Prefix string

	// PublicURL, when set, is the scheme and host (and optional path) of the
	// monitor URLs sent to clients. Defaults to URLs built from each request.
	PublicURL string

	// TrustedProxies are the networks whose X-Forwarded-* headers are
	// believed: for monitor URLs, and passed on to the upstream ahead of the
	// gateway's own, as are their X-Forwarded-Ssl, X-Forwarded-Scheme,
	// X-Forwarded-Port, X-Real-Ip and Client-Ip. Defaults to none: a
	// client's X-Forwarded-For, -Host and -Proto are replaced by the
	// gateway's, and those others dropped.
	TrustedProxies []netip.Prefix

	// Transport carries requests to the upstream. Defaults to a clone of
	// http.DefaultTransport keeping DefaultMaxIdleConnsPerHost idle
	// connections per host.
	Transport http.RoundTripper

	// Owner binds each operation to its caller, so that its monitor URLs are
	// a 404 for anyone else: OwnerHeader, OwnerCookie, OwnerIssuedCookie
	// and OwnerUpstream say how the caller is known, and ParseOwner reads
	// the same from a string such as "header:Authorization". A request
	// whose owner cannot be determined is answered 403 at submit and 404 at
	// poll. Defaults to the zero Owner: the unguessable monitor URL is the
	// only key to an operation.
	Owner Owner

	// MaxWatches bounds the long-polls and event streams open at once;
	// past it they are answered 503 with Retry-After, while submits and
	// polls that do not wait go on (asyncreply.Config.MaxWatches).
	// Defaults to DefaultMaxWatches.
	MaxWatches int

	// MaxWatchesPerOwner bounds the long-polls and event streams of one
	// Owner open at once; past it that owner's are answered 429 with
	// Retry-After (asyncreply.Config.MaxWatchesPerOwner). Defaults to
	// DefaultMaxWatchesPerOwner.
	MaxWatchesPerOwner int

	// AcceptOnly makes the gateway accept operations and serve their monitor
	// URLs but replay none: `asyncreply worker` processes sharing Backend
	// replay them (asyncreply.Config.AcceptOnly). It needs a Backend that
	// processes share, such as SQLite or PostgreSQL. Defaults to false:
	// the gateway replays too.
	AcceptOnly bool

	// Inline executes each operation inside the request that submits it,
	// with the same monitor URLs (asyncreply.Config.Inline): development
	// without a worker, where the answer is there as soon as the submit
	// returns. It excludes AcceptOnly. Defaults to false.
	Inline bool

	// ProgressURL is the scheme and host (and optional path) at which the
	// upstream reaches this process, e.g. "http://127.0.0.1:8080": each
	// replay then carries ProgressHeader, a URL under it where the
	// application may report its progress while that replay runs, served
	// by Handler (and ProgressHandler). Defaults to "": replays carry no
	// progress URL.
	ProgressURL string

	// Logger receives structured logs. Defaults to slog.Default().
	Logger *slog.Logger

	// Registerer receives the gateway's metrics, which MetricsHandler
	// serves (asyncreply.Config.Registerer). Defaults to a new registry of
	// the gateway's own.
	Registerer prometheus.Registerer

	// TracerProvider and Propagator trace each operation
	// (asyncreply.Config.TracerProvider, asyncreply.Config.Propagator):
	// a replay reaches the upstream with its span's traceparent, in the
	// trace of the request that made the operation; a request the gateway
	// only forwards keeps the client's trace headers. Default to
	// OpenTelemetry's global provider and propagator.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator

	// Key, when set, encrypts recorded requests (cookies and Authorization
	// included) and stored responses at rest with AES-256-GCM; it must be 32
	// bytes. Defaults to nil: stored as they are, with a warning at start
	// for a durable backend.
	Key []byte

	// Notify delivers operations' terminal transitions to signed webhooks
	// and publishers (asyncreply.Config.Notify); a Route's Notify names a
	// webhook for its operations. Defaults to delivering nothing.
	Notify asyncreply.NotifyConfig

	// whoamiWaiting, set by tests, is called by each request once it waits
	// for the upstream's answer to who its caller is (OwnerUpstream).
	whoamiWaiting func()
}

// Route is an asynchronous route: a pattern, and optionally its own wait,
// timeout and retention in place of Config's.
type Route struct {
	// Pattern is in net/http.ServeMux syntax, e.g. "GET /reports/{id}" or
	// "POST /exports".
	Pattern string
	// Wait, Timeout and Retention override Config's fields of the same name
	// for this route's operations. Zero keeps Config's.
	Wait, Timeout, Retention time.Duration
	// Notify is a webhook called when each of the route's operations
	// finishes (asyncreply.RouteOptions.Notify), never shown to clients.
	// Defaults to Config.Notify.URL.
	Notify string
}

func (r Route) options() asyncreply.RouteOptions {
	return asyncreply.RouteOptions{Wait: r.Wait, Timeout: r.Timeout, Retention: r.Retention, Notify: r.Notify}
}

// ConfigError is an invalid Config field, as New and Config.Validate
// report it. The fields the gateway passes on to the library are reported
// as the library finds them, under the same names.
type ConfigError struct {
	Field string // the Config field, e.g. "Async"
	Err   error
}

func (e *ConfigError) Error() string { return "gateway: " + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Gateway is a reverse proxy that makes some routes asynchronous. Create it
// with New, serve Handler, and call Shutdown after http.Server.Shutdown.
type Gateway struct {
	cfg        Config
	upstream   *url.URL
	middleware *asyncreply.Middleware
	proxy      *httputil.ReverseProxy
	async      *http.ServeMux  // the async routes, each proxying with its options
	owner      *owner          // nil for the zero Config.Owner
	transport  *http.Transport // ours to close, when Config.Transport was nil

	ownerCookieMaxAge time.Duration // the lifetime of OwnerIssuedCookie's cookies
	progressPrefix    string        // the path of the progress URLs: Prefix + progressPath
	progress          progressBoard // the progress URLs of the replays running here

	handlerOnce sync.Once
	handler     http.Handler
}

// New validates cfg, fills in its defaults and returns a Gateway. Nothing
// runs and the upstream is not contacted until Handler is called.
func New(cfg Config) (*Gateway, error) {
	g := &Gateway{}
	if cfg.Transport == nil {
		g.transport = newTransport()
		cfg.Transport = g.transport
	}
	library, err := g.configure(cfg)
	if err != nil {
		return nil, err
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:   g.rewrite,
		Transport: g.cfg.Transport,
		// The default: a response of known length is written as buffers
		// fill, while server-sent events and responses of unknown length —
		// streams — are flushed as each write arrives.
		FlushInterval:  0,
		ModifyResponse: g.modifyResponse,
		ErrorHandler:   g.proxyError,
		ErrorLog:       slog.NewLogLogger(g.cfg.Logger.Handler(), slog.LevelWarn),
	}
	if g.middleware, err = asyncreply.New(library); err != nil {
		// Not a field configure validated: what only creating can find.
		return nil, errors.Join(fromLibrary(err)...)
	}
	return g, nil
}

// Validate reports what New would refuse in cfg, without starting
// anything: every invalid field, each as a *ConfigError (several are joined
// with errors.Join; use errors.As to find one).
func (cfg Config) Validate() error {
	_, err := new(Gateway).configure(cfg)
	return err
}

// configure is the part of New that can fail, which Validate runs too, on
// a Gateway it throws away. It checks what is the gateway's own (Upstream,
// Concurrency, Async, Owner) and lets the library check the rest, parsing
// each once: it fills in g's configuration, its upstream, its async routes
// and its owner, and returns the library's Config. The error holds every
// invalid field.
func (g *Gateway) configure(cfg Config) (asyncreply.Config, error) {
	cfg.Prefix = cmp.Or(cfg.Prefix, DefaultPrefix)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var errs []error
	var err error
	if g.upstream, err = parseUpstream(cfg.Upstream); err != nil {
		errs = append(errs, &ConfigError{"Upstream", err})
	}
	switch {
	case cfg.Concurrency < 0:
		errs = append(errs, &ConfigError{"Concurrency", fmt.Errorf("must not be negative, got %d", cfg.Concurrency)})
	case cfg.Concurrency > 0 && cfg.Backend != nil:
		// It would not apply: a Backend bounds its own executions.
		errs = append(errs, &ConfigError{"Concurrency", errors.New("bounds only the backend the gateway creates; a Backend given in Config is bounded where it is created (memory.Config.Concurrency, backendurl.Options.Concurrency)")})
	}
	cfg.Concurrency = cmp.Or(cfg.Concurrency, DefaultConcurrency)
	// A route reaches g.proxy when it is served: New creates the proxy
	// after configure.
	forward := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.proxy.ServeHTTP(w, r) })
	if g.async, err = asyncRoutes(cfg.Async, cfg.Prefix, forward); err != nil {
		errs = append(errs, &ConfigError{"Async", err})
	}
	if err := cfg.Owner.check(); err != nil {
		errs = append(errs, &ConfigError{"Owner", err})
	}
	if cfg.ProgressURL != "" {
		if u, err := url.Parse(cfg.ProgressURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, &ConfigError{"ProgressURL", fmt.Errorf("%q must be an absolute http or https URL without query, e.g. http://127.0.0.1:8080", cfg.ProgressURL)})
		}
		cfg.ProgressURL = strings.TrimSuffix(cfg.ProgressURL, "/")
	}
	be := cfg.Backend
	if be == nil {
		be = memory.New(memory.Config{Concurrency: cfg.Concurrency})
	}
	library := asyncreply.Config{
		Backend:            be,
		Prefix:             cfg.Prefix,
		PublicURL:          cfg.PublicURL,
		TrustedProxies:     cfg.TrustedProxies,
		Wait:               cfg.Wait,
		MaxWatches:         cfg.MaxWatches,
		MaxWatchesPerOwner: cfg.MaxWatchesPerOwner,
		Retention:          cfg.Retention,
		Timeout:            cfg.Timeout,
		Logger:             cfg.Logger,
		Registerer:         cfg.Registerer,
		TracerProvider:     cfg.TracerProvider,
		Propagator:         cfg.Propagator,
		Key:                cfg.Key,
		AcceptOnly:         cfg.AcceptOnly,
		Inline:             cfg.Inline,
		Notify:             cfg.Notify,
	}
	if len(cfg.Notify.Secrets) == 0 && slices.ContainsFunc(cfg.Async, func(r Route) bool { return r.Notify != "" }) {
		errs = append(errs, &ConfigError{"Async", errors.New("a route's notify webhook needs Notify.Secrets to be signed")})
	}
	if errs = append(errs, fromLibrary(library.Validate())...); len(errs) > 0 {
		return library, errors.Join(errs...)
	}
	g.cfg = cfg
	g.ownerCookieMaxAge = ownerCookieMaxAge(&cfg)
	g.progressPrefix = cfg.Prefix + progressPath
	if cfg.Owner != (Owner{}) {
		g.owner = newOwner(cfg.Owner, &cfg, g.upstream)
		library.Owner = g.owner.principal
	}
	return library, nil
}

// fromLibrary restates the library's ConfigErrors, joined in err, as the
// gateway's: every field the gateway passes on has the same name in both
// Configs.
func fromLibrary(err error) []error {
	if err == nil {
		return nil
	}
	errs := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs = joined.Unwrap()
	}
	gateway := make([]error, len(errs))
	for i, err := range errs {
		var ce *asyncreply.ConfigError
		if errors.As(err, &ce) {
			gateway[i] = &ConfigError{ce.Field, ce.Err}
		} else {
			gateway[i] = fmt.Errorf("gateway: %w", err)
		}
	}
	return gateway
}

// negativeDuration names the first of wait, timeout and retention that is
// negative, with its value; field is "" when none is.
func negativeDuration(wait, timeout, retention time.Duration) (field string, d time.Duration) {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"Wait", wait}, {"Timeout", timeout}, {"Retention", retention}} {
		if f.d < 0 {
			return f.name, f.d
		}
	}
	return "", 0
}

func parseUpstream(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("required: the URL of the application to forward to, e.g. http://127.0.0.1:3000")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q must be an absolute http or https URL, e.g. http://127.0.0.1:3000", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%q must not have a query, fragment or user info", raw)
	}
	return u, nil
}

// asyncRoutes returns a ServeMux routing each async pattern to proxy as an
// asynchronous route with the route's options. ServeMux itself reports a
// malformed pattern or two conflicting ones by panicking, which becomes an
// error here.
func asyncRoutes(routes []Route, prefix string, proxy http.Handler) (mux *http.ServeMux, err error) {
	mux = http.NewServeMux()
	for _, route := range routes {
		pattern := route.Pattern
		if path := patternPath(pattern); strings.HasPrefix(path, prefix) || path+"/" == prefix {
			return nil, fmt.Errorf("pattern %q: its path is under the monitor prefix %q, which the gateway serves itself", pattern, prefix)
		}
		if field, d := negativeDuration(route.Wait, route.Timeout, route.Retention); field != "" {
			return nil, fmt.Errorf("route %q: %s must not be negative, got %s", pattern, strings.ToLower(field), d)
		}
		if route.Notify != "" {
			if err := notify.CheckURL(route.Notify); err != nil {
				return nil, fmt.Errorf("route %q: notify: %w", pattern, err)
			}
		}
		if err := handle(mux, pattern, asyncreply.AsyncWith(proxy, route.options())); err != nil {
			return nil, err
		}
	}
	return mux, nil
}

func handle(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			msg := strings.TrimPrefix(fmt.Sprint(p), "http: ")
			err = fmt.Errorf("pattern %q: %s (want Go ServeMux syntax, e.g. \"GET /reports/{id}\")", pattern, msg)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// patternPath is the path of a ServeMux pattern "[METHOD ][HOST]/[PATH]".
func patternPath(pattern string) string {
	if _, rest, ok := strings.Cut(strings.TrimSpace(pattern), " "); ok {
		pattern = strings.TrimSpace(rest)
	}
	if i := strings.Index(pattern, "/"); i >= 0 {
		return pattern[i:]
	}
	return pattern
}

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 0 // no total limit; the per-host limit below bounds the pool
	t.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	return t
}

// Handler returns the gateway's handler and starts executing operations.
// Handler returns the gateway's handler and starts executing operations.
// It may be called more than once and returns the same handler.
//
// Every request goes through asyncreply's Middleware, so that the
// application may defer any of them (the handshake in deferral.go): a
// request to an async route is deferred at once, with the route's options;
// any other is forwarded with DeferrableHeader, its body kept up to the
// request limit while it streams, and becomes an operation only if the
// application answers with DeferHeader. A replay goes to the upstream
// whatever this process's routes — a worker has none — since its options
// were stored with it. Matching the async routes with their ServeMux, and
// serving only what matched through it, keeps other requests unchanged: no
// redirect to a cleaned path, no 405 in place of the upstream's.
func (g *Gateway) Handler() http.Handler {
	g.handlerOnce.Do(func() {
		app := g.middleware.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, replay := asyncreply.OperationID(r.Context()); replay {
				g.forwardReplay(w, r)
				return
			}
			if route, pattern := g.async.Handler(r); pattern != "" {
				r.Pattern = pattern // as ServeMux sets it: the route the metrics count by
				route.ServeHTTP(w, r)
				return
			}
			g.proxy.ServeHTTP(w, r)
		}))
		g.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			monitor := strings.HasPrefix(r.URL.Path, g.cfg.Prefix)
			if token, ok := g.progressToken(r.URL.Path); monitor && ok {
				g.progress.serveProgress(w, r, token)
				return
			}
			if !monitor {
				r = g.withoutSpoofable(r) // before it is recorded
			}
			if g.issuesOwnerCookie() {
				_, pattern := g.async.Handler(r)
				w, r = g.bindOwnerCookie(w, r, monitor, pattern != "")
			}
			app.ServeHTTP(w, r)
		})
	})
	return g.handler
}

// MetricsHandler serves the gateway's metrics in the Prometheus text
// format (asyncreply's MetricsHandler), for an operator listener: never
// for the listener clients reach.
func (g *Gateway) MetricsHandler() http.Handler {
	return g.middleware.MetricsHandler()
}

// ProgressHandler serves only the progress URLs of this process's replays
// (ProgressHeader), for a process that replays without serving clients —
// `asyncreply worker` — on a listener the upstream can reach. Handler
// serves them too.
func (g *Gateway) ProgressHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := g.progressToken(r.URL.Path)
		if !ok {
			problem.Write(w, http.StatusNotFound, "Not Found", "This listener serves only the progress URLs of running replays.")
			return
		}
		g.progress.serveProgress(w, r, token)
	})
}

// forwardReplay forwards a replay to the upstream, with a progress URL valid
// while it runs when Config.ProgressURL says where the upstream reaches
// this process.
func (g *Gateway) forwardReplay(w http.ResponseWriter, r *http.Request) {
	if g.cfg.ProgressURL != "" {
		token, end := g.progress.open(r.Context())
		defer end()
		r = r.WithContext(context.WithValue(r.Context(), progressTokenKey{}, token))
	}
	g.proxy.ServeHTTP(w, r)
}

// progressTokenKey is the context key of a replay's progress token.
type progressTokenKey struct{}

// issuesOwnerCookie reports whether Config.Owner is OwnerIssuedCookie.
func (g *Gateway) issuesOwnerCookie() bool {
	return g.owner != nil && g.owner.mode.kind == ownerByIssuedCookie
}

// Shutdown stops accepting new operations, lets running replays finish
// until ctx ends, then cancels them, stops the backend and closes idle
// connections to the upstream. Call it after http.Server.Shutdown.
func (g *Gateway) Shutdown(ctx context.Context) error {
	err := g.middleware.Shutdown(ctx)
	if g.transport != nil {
		g.transport.CloseIdleConnections()
	}
	return err
}

// CheckUpstream reports whether the upstream accepts TCP connections. The
// gateway works without it — requests fail with 502 until it is up — so a
// failure is a reason to warn, not to stop.
func (g *Gateway) CheckUpstream(ctx context.Context) error {
	host := g.upstream.Host
	if g.upstream.Port() == "" {
		port := "80"
		if g.upstream.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(g.upstream.Hostname(), port)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return fmt.Errorf("gateway: upstream %s unreachable: %w", g.upstream.Redacted(), err)
	}
	return conn.Close()
}

// rewrite forwards to the upstream with the X-Forwarded-* headers of the
// original client, and without the headers it must not set (spoofable). On
// replay the recorded request keeps that client's RemoteAddr, Host and TLS
// state, so the same code serves both.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(g.upstream)
	trusted := netaddr.Trusted(pr.In.RemoteAddr, g.cfg.TrustedProxies)
	stripSpoofable(pr.Out.Header, trusted)
	if trusted {
		pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	}
	pr.SetXForwarded()
	if trusted {
		for _, name := range []string{"X-Forwarded-Host", "X-Forwarded-Proto"} {
			if v := pr.In.Header.Get(name); v != "" {
				pr.Out.Header.Set(name, v)
			}
		}
	}
	if g.issuesOwnerCookie() {
		// The gateway's own, not the upstream's. operationOwnerCookie is
		// only ever sent to monitor URLs, which are not forwarded.
		stripCookie(pr.Out.Header, OwnerCookieName)
	}
	if id, ok := asyncreply.OperationID(pr.In.Context()); ok {
		pr.Out.Header.Set(OperationHeader, id)
		if token, ok := pr.In.Context().Value(progressTokenKey{}).(string); ok {
			pr.Out.Header.Set(ProgressHeader, g.cfg.ProgressURL+g.cfg.Prefix+progressPath+token)
		}
	} else {
		pr.Out.Header.Set(DeferrableHeader, "1")
	}
}

// modifyResponse inspects every upstream answer before anything of it is
// written. An answer with DeferHeader is the application deferring the
// request: it becomes an error that proxyError, which has written nothing
// yet, turns into the operation. No Asyncreply-* header of the upstream's
// reaches a client or a stored response. And a replay whose upstream
// response breaks off — short of its Content-Length, a chunked body without
// its last chunk, a reset connection — fails with 502 instead of storing
// the part that arrived as the answer: a client of a proxied request sees
// its connection aborted (ReverseProxy panics with http.ErrAbortHandler
// under a server), but a replay runs under no server, and there
// ReverseProxy only logs the error and returns as if the response were
// whole.
func (g *Gateway) modifyResponse(resp *http.Response) error {
	ctx := resp.Request.Context()
	id, replay := asyncreply.OperationID(ctx)
	deferValue, deferred := resp.Header[DeferHeader]
	stripHandshake(resp.Header)
	if deferred && resp.StatusCode == http.StatusAccepted {
		if replay {
			return errDeferredReplay
		}
		opts, err := parseDeferral(strings.Join(deferValue, ", "))
		if err != nil {
			return &badDeferral{err}
		}
		return &deferral{opts}
	}
	if replay && resp.StatusCode != http.StatusSwitchingProtocols {
		// An upgrade's body is the connection itself, which ReverseProxy
		// needs unwrapped; a replay has no client to upgrade anyway.
		resp.Body = &replayBody{ReadCloser: resp.Body, ctx: ctx, id: id, logger: g.cfg.Logger}
	}
	return nil
}

// stripHandshake removes every header of the handshake from h.
func stripHandshake(h http.Header) {
	for name := range h {
		if handshakeHeader(name) {
			delete(h, name)
		}
	}
}

// replayBody is an upstream response body read during a replay.
type replayBody struct {
	io.ReadCloser
	ctx    context.Context
	id     string
	logger *slog.Logger
}

func (b *replayBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.ctx.Err() == nil { // a canceled or timed-out replay has its own outcome
		b.logger.Warn("gateway: the upstream's response broke off; the operation fails with 502", "operation", b.id, "error", err)
		asyncreply.Fail(b.ctx, http.StatusBadGateway, "Bad Gateway", "The upstream application's response broke off before its end.")
	}
	return n, err
}

// clientInfoHeaders are the request headers through which applications
// learn the client's address, or that it used HTTPS, from a proxy in front:
// X-Forwarded-Ssl: on is HTTPS to Rack, Client-Ip the address to Rails.
// Only a proxy of Config.TrustedProxies may send them; the gateway sets the
// first three itself.
var clientInfoHeaders = []string{
	"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
	"X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Forwarded-Port", "X-Real-Ip", "Client-Ip", "Forwarded",
}

// spoofable reports whether the request header name, sent by a client (a
// proxy of Config.TrustedProxies when trusted), is kept from the upstream:
//   - any spelling of any header of the handshake (Asyncreply-*), which only
//     the gateway sets;
//   - one of clientInfoHeaders, unless trusted;
//   - even from a trusted proxy, one of them spelled with underscores for
//     dashes: no proxy sends that spelling, but Rack, WSGI and PHP read it
//     as the header itself (X_Forwarded_Ssl and X-Forwarded-Ssl both become
//     HTTP_X_FORWARDED_SSL), and a proxy may pass it on from its client.
func spoofable(name string, trusted bool) bool {
	if handshakeHeader(name) {
		return true
	}
	for _, info := range clientInfoHeaders {
		if readsAs(name, info) {
			return !trusted || strings.IndexByte(name, '_') >= 0
		}
	}
	return false
}

// readsAs reports whether a server that ignores case and reads underscores
// as dashes, as every CGI-style one does, takes the header name for want.
// It allocates nothing: it runs on every header of every request.
func readsAs(name, want string) bool {
	if len(name) != len(want) {
		return false
	}
	for i := range len(name) {
		c, w := name[i], want[i]
		if c == '_' {
			c = '-'
		}
		if c != w && lowerASCII(c) != lowerASCII(w) {
			return false
		}
	}
	return true
}

// handshakeHeader reports whether a CGI-style server reads name as a header
// of the handshake, one that begins with handshakePrefix.
func handshakeHeader(name string) bool {
	return len(name) > len(handshakePrefix) && readsAs(name[:len(handshakePrefix)], handshakePrefix)
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// stripSpoofable removes the spoofable headers from h.
func stripSpoofable(h http.Header, trusted bool) {
	for name := range h {
		if spoofable(name, trusted) {
			delete(h, name)
		}
	}
}

// withoutSpoofable returns r, or a copy of it without its spoofable headers
// and without the admin listener's cookie (AdminCookieName), so that they
// are neither recorded with an operation nor forwarded.
func (g *Gateway) withoutSpoofable(r *http.Request) *http.Request {
	if _, found := cookieValue(r.Header, AdminCookieName); found {
		h := r.Header.Clone()
		stripCookie(h, AdminCookieName)
		r = withHeader(r, h)
	}
	trusted := netaddr.Trusted(r.RemoteAddr, g.cfg.TrustedProxies)
	for name := range r.Header {
		if spoofable(name, trusted) {
			return withHeader(r, copyHeader(r.Header, func(name string) bool { return spoofable(name, trusted) }))
		}
	}
	return r
}

// proxyError answers a request the upstream did not: 502 problem+json, on
// first arrival and on replay alike, where it becomes the stored response.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if g.handshakeError(w, r, err) {
		return
	}
	attrs := []any{"method", r.Method, "path", r.URL.Path, "error", err}
	if id, ok := asyncreply.OperationID(r.Context()); ok {
		attrs = append(attrs, "operation", id)
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		g.cfg.Logger.Debug("gateway: client went away before the upstream answered", attrs...)
	} else {
		g.cfg.Logger.Warn("gateway: upstream request failed", attrs...)
	}
	status, title, detail := http.StatusBadGateway, "Bad Gateway", "The upstream application could not be reached or did not answer."
	if errors.Is(err, context.DeadlineExceeded) {
		status, title, detail = http.StatusGatewayTimeout, "Gateway Timeout", "The upstream application did not answer in time."
	}
	if asyncreply.Fail(r.Context(), status, title, detail) {
		return // a replay: the operation fails, as a synchronous call would have
	}
	problem.Write(w, status, title, detail)
}

// handshakeError answers the errors of modifyResponse that are the
// handshake's, and reports whether err was one. A deferral makes the
// request an operation, as an async route would; the answer the
// application deferred with is dropped, cookies and all.
func (g *Gateway) handshakeError(w http.ResponseWriter, r *http.Request, err error) bool {
	var d *deferral
	var bad *badDeferral
	switch {
	case errors.As(err, &d):
		if !asyncreply.DeferWith(w, r, d.opts) {
			// Every first arrival passes through the Middleware, so this is
			// a response already started, which DeferWith has logged.
			problem.Write(w, http.StatusBadGateway, "Bad Gateway", "The upstream application's deferral could not be followed.")
		}
	case errors.As(err, &bad):
		g.cfg.Logger.Warn("gateway: the upstream answered with a malformed "+DeferHeader+" header; answering 502",
			"method", r.Method, "path", r.URL.Path, "error", err)
		problem.Write(w, http.StatusBadGateway, "Bad deferral",
			"The upstream application deferred the request with a malformed "+DeferHeader+" header.")
	case errors.Is(err, errDeferredReplay):
		id, _ := asyncreply.OperationID(r.Context())
		g.cfg.Logger.Warn("gateway: the upstream deferred a replay instead of running it; the operation fails with 502", "operation", id)
		asyncreply.Fail(r.Context(), http.StatusBadGateway, "Bad Gateway",
			"The upstream application deferred its replay instead of answering it.")
	default:
		return false
	}
	return true
}
