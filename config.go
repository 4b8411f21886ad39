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
	// answers exactly as the asynchronous mode would (202 and the same monitor
	// URLs, with the operation already finished). Use it in development and
	// tests; switching it off changes nothing a client sees but timing.
	// Defaults to false.
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

	// now is the clock, replaced in tests.
	now func() time.Time
}

// withDefaults validates cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/") || len(cfg.Prefix) < 2 {
		errs = append(errs, fmt.Errorf("Prefix %q must start and end with \"/\" and not be the root", cfg.Prefix))
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("PublicURL %q must be an absolute http or https URL", cfg.PublicURL))
		}
		cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	}
	for _, field := range []struct {
		name string
		d    time.Duration
	}{
		{"Wait", cfg.Wait}, {"MaxWait", cfg.MaxWait}, {"RetryAfter", cfg.RetryAfter},
		{"Retention", cfg.Retention}, {"Timeout", cfg.Timeout}, {"SweepInterval", cfg.SweepInterval},
	} {
		if field.d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", field.name, field.d))
		}
	}
	if cfg.MaxRequestBytes < 0 || cfg.MaxResponseBytes < 0 {
		errs = append(errs, errors.New("MaxRequestBytes and MaxResponseBytes must not be negative"))
	}
	if cfg.Key != nil && len(cfg.Key) != 32 {
		errs = append(errs, fmt.Errorf("Key must be 32 bytes for AES-256, got %d", len(cfg.Key)))
	}
	if cfg.AcceptOnly {
		if _, private := cfg.Backend.(*memory.Backend); private || cfg.Backend == nil {
			errs = append(errs, errors.New("AcceptOnly needs a Backend that other processes share: no other process can execute the in-memory backend's operations"))
		}
		if cfg.Inline {
			errs = append(errs, errors.New("AcceptOnly and Inline exclude each other: Inline executes every operation in its request"))
		}
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("asyncreply: invalid config: %w", errors.Join(errs...))
	}

	cfg.MaxWait = cmp.Or(cfg.MaxWait, DefaultMaxWait)
	cfg.RetryAfter = cmp.Or(cfg.RetryAfter, DefaultRetryAfter)
	cfg.Retention = cmp.Or(cfg.Retention, DefaultRetention)
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	cfg.MaxRequestBytes = cmp.Or(cfg.MaxRequestBytes, DefaultMaxRequestBytes)
	cfg.MaxResponseBytes = cmp.Or(cfg.MaxResponseBytes, DefaultMaxResponseBytes)
	cfg.SweepInterval = cmp.Or(cfg.SweepInterval, DefaultSweepInterval)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Backend == nil {
		cfg.Backend = memory.New(memory.Config{})
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	return cfg, nil
}
