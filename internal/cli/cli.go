// Package cli is the asyncreply command: its subcommands, flags and
// environment variables. cmd/asyncreply only calls Run.
package cli

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendurl"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/gateway"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // something went wrong while running
	exitUsage   = 2 // bad command line or configuration
)

// DefaultBackend is where the gateway keeps operations unless told
// otherwise: a file beside it, so that it works on a fresh machine and
// survives restarts.
const DefaultBackend = "sqlite://./asyncreply.db"

// shutdownTimeout bounds a graceful shutdown: requests in flight and running
// replays get this long to finish before they are canceled.
const shutdownTimeout = 30 * time.Second

// Run runs the asyncreply command with args (without the program name),
// reading ASYNCREPLY_* settings through getenv, until ctx ends, and returns
// the process's exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "gateway":
		opts, err := parseGateway(rest, getenv, stdout)
		if err != nil {
			return usageFailure(stderr, "gateway", err)
		}
		return traced(ctx, cmd, getenv, stderr, func(tel *telemetry) int {
			opts.telemetry = tel
			return runGateway(ctx, opts, stderr)
		})
	case "demo":
		opts, err := parseDemo(rest, getenv, stdout)
		if err != nil {
			return usageFailure(stderr, "demo", err)
		}
		return traced(ctx, cmd, getenv, stderr, func(tel *telemetry) int {
			opts.telemetry = tel
			return runDemo(ctx, opts, stdout, stderr)
		})
	case "worker":
		opts, err := parseWorker(rest, getenv, stdout)
		if err != nil {
			return usageFailure(stderr, "worker", err)
		}
		return traced(ctx, cmd, getenv, stderr, func(tel *telemetry) int {
			opts.telemetry = tel
			return runWorker(ctx, opts, stderr)
		})
	case "migrate":
		opts, err := parseMigrate(rest, getenv, stdout)
		if err != nil {
			return usageFailure(stderr, "migrate", err)
		}
		return runMigrate(ctx, opts, stdout, stderr)
	case "get":
		opts, err := parseGet(rest, getenv, stdout)
		if err != nil {
			return usageFailure(stderr, "get", err)
		}
		return runGet(ctx, opts, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, mainUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "asyncreply: unknown command %q\n\n%s", cmd, mainUsage)
		return exitUsage
	}
}

const mainUsage = `asyncreply — asynchronous responses in front of any HTTP application

Usage:
  asyncreply gateway --upstream URL [--async PATTERN] [flags] the reverse proxy
  asyncreply worker --upstream URL --backend URL [flags]      executes operations only
  asyncreply demo [flags]                                     try it in one command
  asyncreply migrate [--backend URL]                          create or update a durable backend's tables
  asyncreply get [-X METHOD] [-d DATA] [-o FILE] URL          a request whose operation is followed to its response

Run "asyncreply COMMAND --help" for a command's flags. Every flag may also be
set in the environment as ASYNCREPLY_<FLAG>, e.g. ASYNCREPLY_UPSTREAM.
`

// usageFailure reports a bad command line: exit 0 for --help (the usage has
// been printed), 2 otherwise.
func usageFailure(stderr io.Writer, cmd string, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(stderr, "asyncreply %s: %v\n", cmd, err)
	return exitUsage
}

// gatewayOptions are the gateway command's flags.
type gatewayOptions struct {
	listen         string
	upstream       string
	async          routeList
	wait           time.Duration
	backend        string
	concurrency    int
	prefix         string
	retention      time.Duration
	timeout        time.Duration
	publicURL      string
	trustedProxies prefixList
	owner          string
	key            keyFlag
	acceptOnly     bool
	inline         bool
	timeouts       serverTimeouts
	progressURL    string
	progressListen string // worker only
	adminListen    string
	adminToken     string

	maxQueued          int
	maxQueuedPerOwner  int
	maxWatches         int
	maxWatchesPerOwner int
	heartbeat          time.Duration

	telemetry *telemetry // from the OTEL_* variables; nil: no tracing
	notify    notifyOptions
}

func parseGateway(args []string, getenv func(string) string, help io.Writer) (*gatewayOptions, error) {
	c, o := gatewayCommand(help)
	return o.check(c.parse(args, getenv), "the URL of the application to forward to, e.g. --upstream http://127.0.0.1:3000")
}

// check completes the parsing of a gateway's or a worker's flags: parseErr,
// or what is missing or wrong in them. upstream says what --upstream is.
func (o *gatewayOptions) check(parseErr error, upstream string) (*gatewayOptions, error) {
	switch {
	case parseErr != nil:
		return nil, parseErr
	case o.upstream == "":
		return nil, errors.New("--upstream is required: " + upstream)
	case o.concurrency < 0:
		return nil, fmt.Errorf("--concurrency must not be negative, got %d", o.concurrency)
	case o.heartbeat < 0:
		return nil, fmt.Errorf("--heartbeat must not be negative, got %v", o.heartbeat)
	}
	if err := o.timeouts.check(); err != nil {
		return nil, err
	}
	return o, nil
}

func gatewayCommand(help io.Writer) (*command, *gatewayOptions) {
	o := &gatewayOptions{}
	fs := newCommand("gateway", help, `Usage: asyncreply gateway --upstream URL [--async PATTERN] [flags]

A reverse proxy to --upstream in which the routes matching an --async pattern
answer 202 Accepted at once and are replayed to the upstream by a worker; the
client polls the monitor URL until it is redirected to the response. Every
other route is proxied unchanged (streaming, SSE and WebSocket included),
and the application may defer any request itself: it answers 202 with
Asyncreply-Defer: 1 (the Rails gem's respond_to_async and render async:,
the Node package's res.deferAsync), and the gateway makes it an operation
as for an --async route. Replays carry Asyncreply-Operation, and
Asyncreply-Progress, where the application may POST its progress.

--owner binds each operation to its caller, so that its monitor URL is a 404
for anyone else. MODE is one of:
  header:NAME    a keyed hash of that request header: an API token that does not change
  cookie:NAME    a keyed hash of that cookie: only a cookie whose value stays the same
  issue-cookie   the gateway issues its own HttpOnly, SameSite=Lax owner cookie; no app change
  upstream:PATH  GET PATH on the upstream with the caller's cookies and Authorization;
                 its 2xx body names the user (cached a few seconds), anything else is anonymous
A Rails app on the default cookie store: issue-cookie or upstream:/whoami, NOT
cookie:_myapp_session, whose value the app re-issues on every response. An API
with bearer tokens: header:Authorization. Without --owner, the unguessable
monitor URL is the only key to an operation: whoever holds it may read the
response.
`)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "`address` to listen on")
	fs.StringVar(&o.upstream, "upstream", "", "`URL` of the application to forward to, e.g. http://127.0.0.1:3000 (required)")
	fs.Var(&o.async, "async", "asynchronous route, a Go ServeMux `pattern` such as 'GET /reports/{id}'; repeatable")
	fs.DurationVar(&o.wait, "wait", gateway.DefaultWait, "how long an async request waits for its answer before falling back to 202")
	fs.StringVar(&o.backend, "backend", DefaultBackend, "where operations live: sqlite://PATH, postgres://… or memory:")
	fs.IntVar(&o.concurrency, "concurrency", gateway.DefaultConcurrency, "most replays running against the upstream at once; leave room for its synchronous routes")
	fs.StringVar(&o.prefix, "prefix", gateway.DefaultPrefix, "`path` of the monitor URLs; must not be used by the upstream")
	fs.DurationVar(&o.retention, "retention", gateway.DefaultRetention, "how long a finished operation and its response are kept")
	fs.DurationVar(&o.timeout, "timeout", gateway.DefaultTimeout, "longest a replay may run; then it fails with 504")
	fs.StringVar(&o.publicURL, "public-url", "", "scheme and host of the monitor URLs sent to clients, e.g. https://app.example; when unset, built from each request")
	fs.Var(&o.trustedProxies, "trusted-proxy", "`CIDR` of a proxy whose X-Forwarded-*, X-Real-IP and Client-IP headers are believed, and dropped from anyone else; repeatable")
	fs.Var(&o.key, "key", "32-byte `key` (64 hex digits or base64) encrypting recorded requests and responses at rest; prefer ASYNCREPLY_KEY to a flag, which other users can see in the process list")
	fs.StringVar(&o.owner, "owner", "", "who may see an operation: header:NAME, cookie:NAME, issue-cookie or upstream:PATH (`MODE`s above); none: whoever holds its URL")
	fs.BoolVar(&o.acceptOnly, "accept-only", false, "accept and serve operations but replay none: 'asyncreply worker' processes sharing --backend replay them")
	fs.IntVar(&o.maxQueued, "max-queued", 0, fmt.Sprintf("most operations waiting to run, beyond which new ones get 503 and Retry-After; 0: the backend's default (memory: %d, and %d MiB of request bodies; sqlite, postgres: none); negative: none",
		memory.DefaultMaxQueued, memory.DefaultMaxQueuedBytes>>20))
	fs.IntVar(&o.maxQueuedPerOwner, "max-queued-per-owner", 0, "most operations of one --owner waiting to run, beyond which its new ones get 429 and Retry-After while others are still accepted; 0: none")
	fs.IntVar(&o.maxWatches, "max-watches", gateway.DefaultMaxWatches, "most long-polls and event streams open at once, beyond which new ones get 503 and Retry-After")
	fs.IntVar(&o.maxWatchesPerOwner, "max-watches-per-owner", gateway.DefaultMaxWatchesPerOwner, "most long-polls and event streams of one --owner open at once, beyond which its new ones get 429 and Retry-After")
	fs.BoolVar(&o.inline, "inline", false, "development: execute each operation inside the request that submits it, with the same monitor URLs")
	fs.StringVar(&o.progressURL, "progress-url", "", "scheme and host at which --upstream reaches this gateway, for the progress URLs replays carry (Asyncreply-Progress); when unset, --listen's address (loopback for 0.0.0.0)")
	o.timeouts.addFlags(fs)
	heartbeatFlag(fs, &o.heartbeat)
	adminFlags(fs, o)
	notifyFlags(fs, &o.notify)
	fs.acceptConfigFile()
	return fs, o
}

// flagOf names the flag that sets a gateway.Config field.
var flagOf = map[string]string{
	"Upstream": "--upstream", "Async": "--async", "Wait": "--wait", "Timeout": "--timeout",
	"Retention": "--retention", "Prefix": "--prefix", "PublicURL": "--public-url", "Owner": "--owner",
	"Key": "--key", "AcceptOnly": "--accept-only", "Inline": "--inline",
	"MaxWatches": "--max-watches", "MaxWatchesPerOwner": "--max-watches-per-owner",
	"ProgressURL": "--progress-url",
}

// gatewayConfig turns the flags into a gateway.Config without a Backend,
// and checks it as far as the flags alone decide: whether --accept-only
// fits --backend is the opened backend's to say (backend.IsLocal), which
// gateway.New asks. Errors name the flag at fault.
func gatewayConfig(o *gatewayOptions, logger *slog.Logger) (gateway.Config, error) {
	owner, ownerErr := gateway.ParseOwner(o.owner)
	if ownerErr != nil {
		ownerErr = fmt.Errorf("--owner: %w", ownerErr)
	}
	cfg := gateway.Config{
		Upstream:           o.upstream,
		Async:              o.async.values,
		Wait:               o.wait,
		Timeout:            o.timeout,
		Retention:          o.retention,
		Prefix:             o.prefix,
		PublicURL:          o.publicURL,
		TrustedProxies:     o.trustedProxies.values,
		Owner:              owner,
		MaxWatches:         o.maxWatches,
		MaxWatchesPerOwner: o.maxWatchesPerOwner,
		Logger:             logger,
		Key:                o.key.value,
		AcceptOnly:         o.acceptOnly,
		Inline:             o.inline,
		ProgressURL:        o.progressURL,
		TracerProvider:     o.telemetry.tracerProvider(),
		Propagator:         o.telemetry.textMapPropagator(),
		Notify:             o.notify.config(),
	}
	unopened := cfg
	unopened.Backend = unopenedBackend{}
	return cfg, errors.Join(ownerErr, flagError(unopened.Validate()))
}

// unopenedBackend stands for the backend --backend names while the flags
// are checked, before opening it creates anything (a SQLite file, tables):
// it says it is not local, which only the opened backend can tell, and
// gateway.New asks that one. Validating a Config calls none of its methods.
type unopenedBackend struct{ backend.Backend }

// newGateway opens the backend and creates the gateway. Errors name the
// flag at fault and are configuration errors.
func newGateway(ctx context.Context, o *gatewayOptions, logger *slog.Logger) (*gateway.Gateway, error) {
	// Validate before opening the backend, which creates a SQLite file.
	cfg, err := gatewayConfig(o, logger)
	if err != nil {
		return nil, err
	}
	// The backend bounds the replays: gateway.Config.Concurrency is only
	// for a backend the gateway creates itself.
	be, err := backendurl.Open(ctx, o.backend, backendurl.Options{
		Concurrency: cmp.Or(o.concurrency, gateway.DefaultConcurrency), Logger: logger,
		MaxQueued: o.maxQueued, MaxQueuedPerOwner: o.maxQueuedPerOwner, Heartbeat: o.heartbeat,
	})
	if err != nil {
		return nil, fmt.Errorf("--backend: %w", err)
	}
	cfg.Backend = be
	if err := o.notify.openPublishers(ctx); err != nil {
		be.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	cfg.Notify.Publish = o.notify.publishers
	gw, err := gateway.New(cfg)
	if err != nil {
		o.notify.closePublishers()
		be.Stop(context.WithoutCancel(ctx))
		return nil, flagError(err)
	}
	return gw, nil
}

// flagError restates each gateway.ConfigError in err, several of which
// may be joined, in terms of the flag at fault.
func flagError(err error) error {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs := joined.Unwrap()
		restated := make([]error, len(errs))
		for i, err := range errs {
			restated[i] = flagError(err)
		}
		return errors.Join(restated...)
	}
	var ce *gateway.ConfigError
	if errors.As(err, &ce) && flagOf[ce.Field] != "" {
		return fmt.Errorf("%s: %w", flagOf[ce.Field], ce.Err)
	}
	return err
}

func runGateway(ctx context.Context, o *gatewayOptions, stderr io.Writer) int {
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if _, err := gatewayConfig(o, logger); err != nil { // before listening
		return usageFailure(stderr, "gateway", err)
	}
	// Listening comes first: the progress URLs name the address.
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		fmt.Fprintf(stderr, "asyncreply gateway: --listen: %v\n", err)
		return exitFailure
	}
	o.progressURL = cmp.Or(o.progressURL, localURL(ln.Addr()))
	admin, err := listenAdmin(o)
	if err != nil {
		ln.Close()
		fmt.Fprintf(stderr, "asyncreply gateway: --admin-listen: %v\n", err)
		return exitFailure
	}
	gw, err := newGateway(ctx, o, logger)
	if err != nil {
		ln.Close()
		if admin != nil {
			admin.Close()
		}
		return usageFailure(stderr, "gateway", err)
	}
	defer o.notify.closePublishers()              // once the gateway has shut down
	stopAdmin := serveAdmin(admin, gw, o, logger) // after the others: scrapes see the drain
	defer stopAdmin()
	checkCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if err := gw.CheckUpstream(checkCtx); err != nil {
		logger.Warn("the upstream does not answer yet; requests get 502 until it does", "upstream", o.upstream, "error", err)
	}
	cancel()
	logger.Info("asyncreply gateway listening", "url", "http://"+ln.Addr().String(), "upstream", o.upstream, "async", o.async.values)
	return serve(ctx, ln, gw, o.timeouts, logger)
}

// serve serves gw on ln until ctx ends, then shuts down gracefully: the
// server first, so that requests in flight can still submit, then the
// gateway.
func serve(ctx context.Context, ln net.Listener, gw *gateway.Gateway, timeouts serverTimeouts, logger *slog.Logger) int {
	return serveHandler(ctx, ln, gw.Handler(), gw, timeouts, logger)
}

// serveHandler is serve with the handler h of gw's to serve.
func serveHandler(ctx context.Context, ln net.Listener, h http.Handler, gw *gateway.Gateway, timeouts serverTimeouts, logger *slog.Logger) int {
	srv := newServer(h, timeouts, logger)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	code := exitOK
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-served:
		logger.Error("serving failed", "error", err)
		code = exitFailure
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("requests in flight were cut off", "error", err)
	}
	if err := gw.Shutdown(shutdownCtx); err != nil {
		logger.Warn("running operations were handed back unfinished", "error", err)
	}
	return code
}

// localURL is the URL of a listener's address for a process on the same
// machine: a listener on every address (0.0.0.0, [::]) is reached on
// loopback.
func localURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func shutdownGateway(gw *gateway.Gateway, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil {
		logger.Warn("stopping the backend failed", "error", err)
	}
}

func parseWorker(args []string, getenv func(string) string, help io.Writer) (*gatewayOptions, error) {
	c, o := workerCommand(help)
	return o.check(c.parse(args, getenv), "the URL of the application to replay requests to")
}

func workerCommand(help io.Writer) (*command, *gatewayOptions) {
	o := &gatewayOptions{}
	fs := newCommand("worker", help, `Usage: asyncreply worker --upstream URL --backend URL [flags]

Executes operations that gateways sharing --backend accepted: replays each
recorded request to --upstream and stores the response. It serves no HTTP.
Run workers beside gateways to add replay capacity, or on other machines
with a postgres:// backend.
`)
	fs.StringVar(&o.upstream, "upstream", "", "`URL` of the application to replay requests to (required)")
	fs.StringVar(&o.backend, "backend", DefaultBackend, "where operations live, shared with the gateways: sqlite://PATH or postgres://…")
	fs.IntVar(&o.concurrency, "concurrency", gateway.DefaultConcurrency, "most replays running against the upstream at once from this worker")
	fs.Var(&o.key, "key", "the gateways' `key`, to read the requests they recorded (prefer ASYNCREPLY_KEY)")
	heartbeatFlag(fs, &o.heartbeat)
	fs.StringVar(&o.progressListen, "progress-listen", "127.0.0.1:0", "`address` serving only the progress URLs of this worker's replays (Asyncreply-Progress); empty: none, and replays carry no progress URL")
	fs.StringVar(&o.progressURL, "progress-url", "", "scheme and host at which --upstream reaches --progress-listen, when not the listener's own address (another machine, a proxy)")
	o.timeouts.addFlags(fs)
	adminFlags(fs, o)
	notifyFlags(fs, &o.notify)
	fs.acceptConfigFile()
	return fs, o
}

// heartbeatFlag adds --heartbeat, the gateway's and the worker's.
func heartbeatFlag(fs *command, heartbeat *time.Duration) {
	fs.DurationVar(heartbeat, "heartbeat", backendurl.DefaultHeartbeat, "how often this process records in --backend that it is alive while it replays; "+
		"the others replay the operations of one silent for six heartbeats at their next sweep (every 15s): "+
		"5s recovers from a death within about 45s, 1s within 21s, for one write per process per heartbeat "+
		"(on SQLite, a process that dies on the same machine is known dead at once); every process sharing --backend should use the same")
}

// runWorker executes operations until ctx ends, then stops: running replays
// may finish within shutdownTimeout, the others go back to the queue.
func runWorker(ctx context.Context, o *gatewayOptions, stderr io.Writer) int {
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if _, err := gatewayConfig(o, logger); err != nil { // before listening
		return usageFailure(stderr, "worker", err)
	}
	var progress net.Listener
	if o.progressListen != "" {
		var err error
		if progress, err = net.Listen("tcp", o.progressListen); err != nil {
			fmt.Fprintf(stderr, "asyncreply worker: --progress-listen: %v\n", err)
			return exitFailure
		}
		o.progressURL = cmp.Or(o.progressURL, localURL(progress.Addr()))
	} else {
		o.progressURL = ""
	}
	admin, err := listenAdmin(o)
	if err != nil {
		if progress != nil {
			progress.Close()
		}
		fmt.Fprintf(stderr, "asyncreply worker: --admin-listen: %v\n", err)
		return exitFailure
	}
	gw, err := newGateway(ctx, o, logger)
	if err != nil {
		for _, ln := range []net.Listener{progress, admin} {
			if ln != nil {
				ln.Close()
			}
		}
		return usageFailure(stderr, "worker", err)
	}
	defer o.notify.closePublishers()              // once the gateway has shut down
	stopAdmin := serveAdmin(admin, gw, o, logger) // after the others: scrapes see the drain
	defer stopAdmin()
	gw.Handler() // starts executing
	logger.Info("asyncreply worker executing operations", "backend", o.backend, "upstream", o.upstream, "concurrency", o.concurrency, "progress_url", o.progressURL)
	if progress == nil {
		<-ctx.Done()
		shutdownGateway(gw, logger)
		return exitOK
	}
	return serveHandler(ctx, progress, gw.ProgressHandler(), gw, o.timeouts, logger)
}

type migrateOptions struct{ backend string }

func parseMigrate(args []string, getenv func(string) string, help io.Writer) (*migrateOptions, error) {
	c, o := migrateCommand(help)
	if err := c.parse(args, getenv); err != nil {
		return nil, err
	}
	return o, nil
}

func migrateCommand(help io.Writer) (*command, *migrateOptions) {
	o := &migrateOptions{}
	fs := newCommand("migrate", help, `Usage: asyncreply migrate [--backend URL]

Creates or updates the tables of a durable backend, then exits. The gateway
also migrates when it starts; run this to do it ahead of a deployment.
`)
	fs.StringVar(&o.backend, "backend", DefaultBackend, "the backend to migrate: sqlite://PATH or postgres://…")
	fs.acceptConfigFile()
	return fs, o
}

func runMigrate(ctx context.Context, o *migrateOptions, stdout, stderr io.Writer) int {
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	be, err := backendurl.Open(ctx, o.backend, backendurl.Options{Logger: logger}) // durable backends migrate on open
	if err != nil {
		return usageFailure(stderr, "migrate", fmt.Errorf("--backend: %w", err))
	}
	if err := be.Stop(ctx); err != nil {
		fmt.Fprintf(stderr, "asyncreply migrate: closing the backend: %v\n", err)
		return exitFailure
	}
	if backend.IsLocal(be) {
		fmt.Fprintf(stdout, "asyncreply migrate: %s keeps operations in this process and has no tables; nothing to do\n", o.backend)
	} else {
		fmt.Fprintln(stdout, "asyncreply migrate: the backend's tables are up to date")
	}
	return exitOK
}

// command is one subcommand's flags and help.
type command struct {
	*flag.FlagSet
	intro string    // what the command does, above the list of flags
	out   io.Writer // where --help is written
}

// newCommand returns a command whose --help lists every flag with its
// default and its environment variable. Parse errors are returned, not
// printed: the caller prints one line naming the flag.
func newCommand(name string, out io.Writer, intro string) *command {
	fs := flag.NewFlagSet("asyncreply "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &command{FlagSet: fs, intro: intro, out: out}
}

func (c *command) printUsage() {
	w := c.out
	fmt.Fprint(w, c.intro, "\nFlags (each also read from the environment variable shown):\n")
	c.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		def := f.DefValue
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "  --%s %s\n      %s\n      default: %s; env: %s\n", f.Name, kind, usage, def, envName(f.Name))
	})
	fmt.Fprintf(w, "\nRepeatable flags take several values from the environment separated by %q.\n", envSeparator)
}

// envSeparator separates the values of a repeatable flag in an environment
// variable; a comma may appear in a route's path.
const envSeparator = ";"

// envName is the environment variable of a flag: ASYNCREPLY_PUBLIC_URL for
// --public-url.
func envName(flagName string) string {
	return "ASYNCREPLY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// acceptConfigFile adds --config: settings read from a YAML file, under
// the flags' names, before the environment and the command line.
func (c *command) acceptConfigFile() {
	c.String(configFlag, "", "YAML `file` of settings named as these flags, e.g. 'upstream: http://127.0.0.1:3000'; async routes may set their own wait, timeout and retention (see the README)")
}

// parse sets flags from the config file, then from the environment, then
// from args, which win.
func (c *command) parse(args []string, getenv func(string) string) error {
	fs := c.FlagSet
	if fs.Lookup(configFlag) != nil {
		if path := configPath(fs, args, getenv); path != "" {
			if err := c.applyConfigFile(path); err != nil {
				return err
			}
		}
	}
	var errs []error
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, name := range names {
		env := envName(name)
		value := getenv(env)
		if value == "" {
			continue
		}
		f := fs.Lookup(name)
		values := []string{value}
		if _, ok := f.Value.(repeatable); ok {
			values = strings.Split(value, envSeparator)
		}
		for _, v := range values {
			if err := f.Value.Set(strings.TrimSpace(v)); err != nil {
				errs = append(errs, fmt.Errorf("%s: invalid value %q for --%s: %w", env, v, name, err))
			}
		}
		if r, ok := f.Value.(repeatable); ok {
			r.layerEnded()
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.printUsage()
			return err
		}
		return fmt.Errorf("%w (see %s --help)", err, fs.Name())
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	return nil
}

// repeatable is a flag that may be given several times. The values of one
// layer — the config file, then the environment, then the command line —
// replace the lower layer's rather than extend them.
type repeatable interface {
	flag.Value
	// layerEnded marks the values set so far as a lower layer's: the next
	// Set starts afresh.
	layerEnded()
}

// list holds the values of a repeatable flag.
type list[T any] struct {
	values  []T
	replace bool // the values are a lower layer's: the next add starts afresh
}

func (l *list[T]) add(v T) {
	if l.replace {
		l.values, l.replace = nil, false
	}
	l.values = append(l.values, v)
}

func (l *list[T]) layerEnded() { l.replace = true }

// join formats the values for --help and errors.
func (l *list[T]) join(format func(T) string) string {
	if l == nil {
		return ""
	}
	s := make([]string, len(l.values))
	for i, v := range l.values {
		s[i] = format(v)
	}
	return strings.Join(s, envSeparator)
}

// keyFlag is an AES-256 key, given as 64 hex digits or as base64.
type keyFlag struct{ value []byte }

func (k *keyFlag) String() string {
	if k == nil || k.value == nil {
		return ""
	}
	return "(set)" // never print a key
}

func (k *keyFlag) Set(v string) error {
	v = strings.TrimSpace(v)
	if b, err := hex.DecodeString(v); err == nil && len(b) == 32 {
		k.value = b
		return nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(v); err == nil && len(b) == 32 {
			k.value = b
			return nil
		}
	}
	return errors.New("want 32 bytes as 64 hex digits or base64, e.g. the output of 'openssl rand -hex 32'")
}

// prefixList is a repeatable CIDR flag.
type prefixList struct{ list[netip.Prefix] }

func (l *prefixList) String() string {
	if l == nil {
		return ""
	}
	return l.join(netip.Prefix.String)
}

func (l *prefixList) Set(v string) error {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		addr, addrErr := netip.ParseAddr(v) // a single address is a /32 or /128
		if addrErr != nil {
			return fmt.Errorf("want a CIDR such as 10.0.0.0/8 or an IP address")
		}
		p = netip.PrefixFrom(addr, addr.BitLen())
	}
	l.add(p.Masked())
	return nil
}
