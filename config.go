package asyncreply

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/memory"
)

// Defaults of Config's fields.
const (
	DefaultPrefix           = "/operations/"
	DefaultRetention        = 24 * time.Hour
	DefaultTimeout          = 10 * time.Minute
	DefaultRetryAfter       = 1 * time.Second
	DefaultMaxWait          = 60 * time.Second
	DefaultMaxRequestBytes  = 10 << 20
	DefaultMaxResponseBytes = 32 << 20
	DefaultSweepInterval    = 15 * time.Second

	// DefaultMaxWatches bounds the long-polls and event streams open at
	// once: each holds a connection, a goroutine and a backend watch,
	// about 20 KB in all, so the default holds under 100 MB.
	DefaultMaxWatches = 4096
	// DefaultMaxWatchesPerOwner is more than a browser opens to one origin
	// over HTTP/1.1 (6) across many tabs, and than an API client needs.
	DefaultMaxWatchesPerOwner = 64

	// DefaultFeedPollInterval is how often the feed poller reads what
	// changed, while a feed is open: a change made by another process
	// reaches feeds within about that.
	DefaultFeedPollInterval = 250 * time.Millisecond
)

// Backend stores and executes operations. It is an alias of backend.Backend so
// that third-party backends need import only the small backend package.
type Backend = backend.Backend

// Config configures a Middleware. Every field is optional.
type Config struct {
	// Backend stores and executes operations. The Middleware owns it: it
	// starts it in Handler and stops it in Shutdown. Defaults to a new
	// in-memory backend (memory.New), whose operations are lost when the
	// process exits.
	Backend Backend

	// Prefix is the path under which monitor URLs are served: an operation's
	// status at Prefix+id, its response at Prefix+id+"/response", its events
	// at Prefix+id+"/events". It must start and end with "/". Defaults to
	// DefaultPrefix ("/operations/").
	Prefix string

	// PublicURL, when set, is the scheme and host (and optional path prefix)
	// of the monitor URLs sent to clients, for an application behind a proxy
	// that rewrites hosts. Defaults to URLs built from each request.
	PublicURL string

	// TrustedProxies are the networks whose X-Forwarded-Proto and
	// X-Forwarded-Host headers are believed when building monitor URLs.
	// Defaults to none: forwarded headers are ignored.
	TrustedProxies []netip.Prefix

	// Wait is how long a submitted request waits for its answer before
	// falling back to 202 Accepted. A client's Prefer: wait=N overrides it.
	// Defaults to 0: answer 202 at once.
	Wait time.Duration

	// MaxWait caps the wait a client may ask for with Prefer: wait=N, on
	// submit and on long-polls. Defaults to DefaultMaxWait.
	MaxWait time.Duration

	// MaxWatches bounds the requests waiting for an operation to change at
	// once: long-polls (Prefer: wait=N on a poll) and event streams. Past
	// it they are answered 503 with Retry-After, while polls that do not
	// wait, submits and health checks go on answering; a submit that asked
	// to wait is answered 202 at once. Defaults to DefaultMaxWatches.
	MaxWatches int

	// MaxWatchesPerOwner bounds the same for one owner, when operations
	// are owner-bound (Config.Owner); past it that owner's long-polls and
	// event streams are answered 429 with Retry-After. Defaults to
	// DefaultMaxWatchesPerOwner.
	MaxWatchesPerOwner int

	// FeedPollInterval is how often, while at least one feed (GET
	// <prefix>events) is open, one poller per Middleware reads from the
	// backend what changed for every owner, to hand it to the open feeds.
	// Changes made by this process are read at once. Defaults to
	// DefaultFeedPollInterval.
	FeedPollInterval time.Duration

	// RetryAfter is the delay suggested to pollers in Retry-After (rounded up
	// to whole seconds) and used by the waiting page's refresh. Defaults to
	// DefaultRetryAfter.
	RetryAfter time.Duration

	// Retention is how long a finished operation and its response are kept.
	// Defaults to DefaultRetention.
	Retention time.Duration

	// Timeout bounds one execution of an operation; an operation that runs
	// longer fails with 504 Gateway Timeout. Defaults to DefaultTimeout.
	Timeout time.Duration

	// MaxRequestBytes bounds the body recorded for replay; an asynchronous
	// request with a larger body is answered 413 and nothing is stored.
	// Defaults to DefaultMaxRequestBytes.
	MaxRequestBytes int64

	// MaxResponseBytes bounds a stored response's body; a larger response
	// fails its operation with 500 rather than being stored truncated.
	// Defaults to DefaultMaxResponseBytes.
	MaxResponseBytes int64

	// Owner says who may see an operation. It is given the request as it
	// reaches the outer Handler, at submit and at poll alike, and returns a
	// principal derived from the request's credentials; an operation is
	// visible only to requests with the same principal, and is a 404 for
	// everyone else. An error answers 403 at submit and 404 at poll.
	// Defaults to nil: whoever holds the unguessable URL may see it.
	Owner func(*http.Request) (string, error)

	// Key, when set, encrypts recorded requests and stored responses at rest
	// with AES-256-GCM. It must be 32 bytes. Responses stored under another
	// key (before it changed) are answered 500 "Encryption key changed"
	// until the server has that key again. Defaults to nil: stored as is.
	Key []byte

	// Inline executes each operation inside the request that submits it, then
	// answers as the asynchronous mode's first poll would, with the same
	// monitor URLs: 303 See Other to the operation's response (or the
	// failure a synchronous caller would have seen), and 202 with the
	// finished operation when the client sent Prefer: respond-async. Use it
	// in development and tests; a client that follows the protocol sees no
	// difference but timing when it is switched off. Defaults to false.
	Inline bool

	// AcceptOnly accepts operations and serves their monitor URLs, but
	// executes none of them: processes sharing the Backend run them —
	// workers, which call Handler and serve nothing. Use it to keep replays
	// off the machines that face clients. It needs a backend that processes
	// share (SQLite, PostgreSQL); with the in-memory one nothing would ever
	// run the operations, and New refuses it. Defaults to false: this
	// process executes operations too.
	AcceptOnly bool

	// SweepInterval is how often expired operations are deleted, and a
	// durable backend's operations whose process died are given to another:
	// it bounds, with the backend's heartbeat, how soon they run again.
	// Defaults to DefaultSweepInterval.
	SweepInterval time.Duration

	// Logger receives structured logs. Recorded credentials never reach it.
	// Defaults to slog.Default().
	Logger *slog.Logger

	// Registerer receives the Middleware's metrics (see MetricsHandler for
	// the list). Two Middlewares given the same Registerer collide, and New
	// refuses the second. Pass prometheus.DefaultRegisterer to add them to
	// the process's global registry. Defaults to a new registry of the
	// Middleware's own, which MetricsHandler serves.
	Registerer prometheus.Registerer

	// TracerProvider starts the Middleware's spans (SubmitSpanName,
	// ReplaySpanName, CollectSpanName): one trace per operation, from the
	// request that made it through each replay, whose request carries the
	// replay span's traceparent to the application. With a no-op provider
	// nothing is traced, at no cost. Defaults to otel.GetTracerProvider(),
	// the global one, a no-op until the program sets one.
	TracerProvider trace.TracerProvider

	// Propagator reads the trace context a client sends and writes the
	// replay span's into the replayed request. Defaults to the global
	// propagator once the program set one (otel.SetTextMapPropagator), W3C
	// Trace Context and Baggage until then.
	Propagator propagation.TextMapPropagator

	// Notify delivers operations' terminal transitions to webhooks and
	// publishers; see NotifyConfig. Defaults to delivering nothing.
	Notify NotifyConfig

	// now is the clock, replaced in tests.
	now func() time.Time
}

// ConfigError is an invalid Config field, as New and Config.Validate
// report it.
type ConfigError struct {
	Field string // the Config field, e.g. "Prefix"
	Err   error
}

func (e *ConfigError) Error() string { return "asyncreply: Config." + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Validate reports what New would refuse in cfg, without creating
// anything: every invalid field, each as a *ConfigError (several are
// joined with errors.Join; use errors.As to find one).
func (cfg Config) Validate() error {
	_, err := cfg.withDefaults()
	return err
}

// withDefaults validates cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	invalid := func(field, format string, args ...any) {
		errs = append(errs, &ConfigError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/") || len(cfg.Prefix) < 2 {
		invalid("Prefix", "%q must start and end with \"/\" and not be the root", cfg.Prefix)
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			invalid("PublicURL", "%q must be an absolute http or https URL", cfg.PublicURL)
		}
		cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	}
	for _, field := range []struct {
		name string
		d    time.Duration
	}{
		{"Wait", cfg.Wait}, {"MaxWait", cfg.MaxWait}, {"RetryAfter", cfg.RetryAfter},
		{"Retention", cfg.Retention}, {"Timeout", cfg.Timeout}, {"SweepInterval", cfg.SweepInterval},
		{"FeedPollInterval", cfg.FeedPollInterval},
	} {
		if field.d < 0 {
			invalid(field.name, "must not be negative, got %s", field.d)
		}
	}
	for _, field := range []struct {
		name string
		n    int64
	}{
		{"MaxWatches", int64(cfg.MaxWatches)}, {"MaxWatchesPerOwner", int64(cfg.MaxWatchesPerOwner)},
		{"MaxRequestBytes", cfg.MaxRequestBytes}, {"MaxResponseBytes", cfg.MaxResponseBytes},
	} {
		if field.n < 0 {
			invalid(field.name, "must not be negative, got %d", field.n)
		}
	}
	if cfg.Key != nil && len(cfg.Key) != 32 {
		invalid("Key", "must be 32 bytes for AES-256, got %d", len(cfg.Key))
	}
	if cfg.AcceptOnly {
		if cfg.Backend == nil || backend.IsLocal(cfg.Backend) {
			invalid("AcceptOnly", "needs a Backend that other processes share: no other process can execute the in-memory backend's operations")
		}
		if cfg.Inline {
			invalid("AcceptOnly", "excludes Inline, which executes every operation in its request")
		}
	}
	cfg.Notify.validate(invalid)
	if len(errs) > 0 {
		return cfg, errors.Join(errs...)
	}

	cfg.MaxWait = cmp.Or(cfg.MaxWait, DefaultMaxWait)
	cfg.RetryAfter = cmp.Or(cfg.RetryAfter, DefaultRetryAfter)
	cfg.Retention = cmp.Or(cfg.Retention, DefaultRetention)
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	cfg.MaxRequestBytes = cmp.Or(cfg.MaxRequestBytes, DefaultMaxRequestBytes)
	cfg.MaxResponseBytes = cmp.Or(cfg.MaxResponseBytes, DefaultMaxResponseBytes)
	cfg.SweepInterval = cmp.Or(cfg.SweepInterval, DefaultSweepInterval)
	cfg.MaxWatches = cmp.Or(cfg.MaxWatches, DefaultMaxWatches)
	cfg.MaxWatchesPerOwner = cmp.Or(cfg.MaxWatchesPerOwner, DefaultMaxWatchesPerOwner)
	cfg.FeedPollInterval = cmp.Or(cfg.FeedPollInterval, DefaultFeedPollInterval)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Backend == nil {
		cfg.Backend = memory.New(memory.Config{})
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	return cfg, nil
}
