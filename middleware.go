package asyncreply

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// Middleware makes marked endpoints of an application asynchronous. Create it
// with New, wrap the whole application with Handler, and call Shutdown when
// the server stops.
type Middleware struct {
	cfg          Config
	sealer       sealer
	retrySeconds int    // Config.RetryAfter rounded up to whole seconds
	retryAfter   string // the same, formatted for the Retry-After header
	publicPath   string // the path of Config.PublicURL, without its final slash

	app     http.Handler
	started atomic.Bool
	closed  chan struct{} // closed by Shutdown: ends long-polls and event streams

	servers sync.Map // *http.Server → chan struct{} closed when it shuts down
	watches watches  // long-polls and event streams open
	metrics *metrics
	lister  backend.Lister       // the backend, when it lists operations; nil otherwise
	changes backend.ChangeLister // the backend, when it lists changes; nil otherwise
	feeds   *feedHub
	tracing *tracing
	notes   notifications

	background sync.WaitGroup // the sweeper and the backend's start-up
	stopOnce   sync.Once
	stopErr    error
}

// New validates cfg, fills in its defaults and returns a Middleware. Nothing
// runs until Handler is called.
func New(cfg Config) (*Middleware, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s, err := newSealer(cfg.Key)
	if err != nil {
		return nil, err
	}
	if !backend.IsLocal(cfg.Backend) && cfg.Key == nil {
		cfg.Logger.Warn("asyncreply: recorded requests, with their cookies and Authorization headers, are stored unencrypted; set Config.Key to encrypt them at rest")
	}
	mt, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, &ConfigError{Field: "Registerer", Err: err}
	}
	lister, _ := cfg.Backend.(backend.Lister)
	if err := mt.observeStore(cfg.Registerer, lister, cfg.now); err != nil {
		return nil, &ConfigError{Field: "Registerer", Err: err}
	}
	changes, _ := cfg.Backend.(backend.ChangeLister)
	notes, err := newNotifications(cfg, cfg.Backend)
	if err != nil {
		return nil, err
	}
	cfg.Backend = countingBackend{Backend: cfg.Backend, errors: mt.backendErrors}
	retrySeconds := int((cfg.RetryAfter + time.Second - 1) / time.Second)
	var publicPath string
	if cfg.PublicURL != "" {
		u, _ := url.Parse(cfg.PublicURL) // validated by withDefaults
		publicPath = u.Path
	}
	m := &Middleware{
		publicPath:   publicPath,
		cfg:          cfg,
		sealer:       s,
		retrySeconds: retrySeconds,
		retryAfter:   strconv.Itoa(retrySeconds),
		closed:       make(chan struct{}),
		watches:      watches{max: cfg.MaxWatches, maxPerOwner: cfg.MaxWatchesPerOwner, gauge: mt.watchesOpen},
		metrics:      mt,
		lister:       lister,
		tracing:      newTracing(cfg),
		changes:      changes,
		notes:        notes,
	}
	m.feeds = newFeedHub(m)
	m.cfg.Backend = nudgingBackend{Backend: m.cfg.Backend, hub: m.feeds}
	return m, nil
}

// Handler wraps the whole application. It serves the monitor URLs under
// Config.Prefix, answers requests that reach Async or Defer with 202, and
// replays recorded requests through app in the backend's workers, which it
// starts. Put it outermost: middleware outside it does not run on replay.
//
// Handler may be called once per Middleware, since the operations it stores
// are replayed through the app it was given.
func (m *Middleware) Handler(app http.Handler) http.Handler {
	if !m.started.CompareAndSwap(false, true) {
		panic("asyncreply: Handler called twice on one Middleware; create a Middleware per application")
	}
	m.app = app
	execute := m.execute
	if m.cfg.Inline {
		// Inline operations run in the request that submits them; the
		// backend's workers have nothing left to do.
		execute = func(context.Context, string) error { return nil }
	}
	if !m.cfg.AcceptOnly && m.notes.notifier != nil && m.notes.configured() {
		if err := m.notes.notifier.DeliverWith(m.deliver); err != nil {
			m.cfg.Logger.Error("asyncreply: the backend refused to deliver; webhooks and publishers are not delivered", "error", err)
		}
	}
	if !m.cfg.AcceptOnly {
		m.background.Add(1)
		go m.startBackend(execute)
	}
	m.background.Add(1)
	go m.sweep()
	return http.HandlerFunc(m.serveHTTP)
}

// startBackend starts the backend's execution, retrying while the store is
// unreachable: requests are accepted meanwhile and run once it starts.
func (m *Middleware) startBackend(execute backend.ExecuteFunc) {
	defer m.background.Done()
	delay := 100 * time.Millisecond
	for {
		err := m.cfg.Backend.Start(context.Background(), execute)
		if err == nil {
			return
		}
		m.cfg.Logger.Error("asyncreply: starting the backend failed; retrying", "error", err, "retry_in", delay)
		select {
		case <-m.closed:
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// sweep deletes expired operations every SweepInterval until Shutdown.
func (m *Middleware) sweep() {
	defer m.background.Done()
	ticker := time.NewTicker(m.cfg.SweepInterval)
	defer ticker.Stop()
	for {
		select {
		case <-m.closed:
			return
		case <-ticker.C:
			ctx, cancel := context.WithTimeout(context.Background(), m.cfg.SweepInterval)
			n, err := m.cfg.Backend.Sweep(ctx, m.cfg.now())
			cancel()
			if err != nil {
				m.cfg.Logger.Warn("asyncreply: sweeping expired operations failed", "error", err)
			} else if n > 0 {
				m.cfg.Logger.Debug("asyncreply: swept expired operations", "count", n)
			}
		}
	}
}

// Shutdown stops accepting new operations (they are answered 503), ends
// long-polls and event streams, lets running operations finish until ctx
// ends, then cancels them, and stops the backend. No goroutine of the
// Middleware or its backend outlives it. It returns ctx's error when running
// operations had to be canceled. Call it after http.Server.Shutdown, so
// that requests in flight can still submit.
func (m *Middleware) Shutdown(ctx context.Context) error {
	m.stopOnce.Do(func() {
		close(m.closed)
		m.background.Wait()
		m.feeds.shutdown()
		m.stopErr = m.cfg.Backend.Stop(ctx)
		if m.notes.webhooks != nil {
			m.notes.webhooks.CloseIdleConnections()
		}
	})
	return m.stopErr
}

func (m *Middleware) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, m.cfg.Prefix); ok {
		m.serveMonitor(w, r, rest)
		return
	}
	st := &requestState{m: m, original: r, writer: &trackingWriter{ResponseWriter: w}}
	inner := r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	if r.Body != nil && r.Body != http.NoBody {
		st.body = &recordingBody{src: r.Body, limit: m.cfg.MaxRequestBytes}
		inner.Body = st.body
	}
	m.app.ServeHTTP(st.writer, inner)
}

// newID returns an operation ID: 128 bits from crypto/rand, base64url.
func newID() string {
	var b [16]byte
	rand.Read(b[:]) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b[:])
}

const idLength = 22 // base64url of 16 bytes, unpadded

func validID(id string) bool {
	if len(id) != idLength {
		return false
	}
	for i := range len(id) {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// storeTimeout bounds one call to the backend made on a request's behalf:
// a stuck store becomes a 503, not a hung client.
const storeTimeout = 10 * time.Second

// storeContext detaches a store call from the client's request: an operation
// whose 202 was never read must still be stored or not, never half.
func storeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
}

// lookup returns the operation id if the requester may see it, and answers
// 404 (or 503) itself otherwise. Someone else's operation is a 404 too, so
// that its existence is not revealed.
func (m *Middleware) lookup(w http.ResponseWriter, r *http.Request, id string) (*backend.Operation, bool) {
	ctx, cancel := storeContext(r.Context())
	defer cancel()
	op, ok := m.getLive(ctx, w, id)
	if !ok {
		return nil, false
	}
	if !m.ownedBy(r, op) {
		writeNotFound(w)
		return nil, false
	}
	return op, true
}

// getLive returns the operation id, whoever owns it, or answers 404 (or
// 503) itself: an operation canceled or expired is gone.
func (m *Middleware) getLive(ctx context.Context, w http.ResponseWriter, id string) (*backend.Operation, bool) {
	op, err := m.cfg.Backend.Get(ctx, id)
	switch {
	case errors.Is(err, backend.ErrNotFound):
		writeNotFound(w)
		return nil, false
	case err != nil:
		m.cfg.Logger.Error("asyncreply: reading an operation failed", "operation", id, "error", err)
		writeUnavailable(w, m.retryAfter)
		return nil, false
	case op.Status == backend.Canceled || op.Expired(m.cfg.now()):
		writeNotFound(w)
		return nil, false
	}
	return op, true
}

// ownedBy reports whether the requester is op's owner: anyone without
// Config.Owner, the same principal with it.
func (m *Middleware) ownedBy(r *http.Request, op *backend.Operation) bool {
	if m.cfg.Owner == nil {
		return true
	}
	owner, err := m.owner(r)
	return err == nil && owner == op.Owner
}

// shuttingDown reports whether Shutdown has been called.
func (m *Middleware) shuttingDown() bool {
	select {
	case <-m.closed:
		return true
	default:
		return false
	}
}

// waitDone waits until the operation is done or d has passed, the client
// has gone, or the Middleware shuts down, and returns its latest state.
func (m *Middleware) waitDone(ctx context.Context, op *backend.Operation, d time.Duration) (*backend.Operation, error) {
	if op.Status.Done() || d <= 0 {
		return op, nil
	}
	feed, err := m.subscribe(ctx, op.ID)
	if err != nil {
		return op, err
	}
	defer feed.stop()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		latest, err := feed.latest()
		if err != nil {
			return op, err
		}
		op = latest
		if op.Status.Done() || feed.wait(timer.C, nil) != changed {
			return op, nil
		}
	}
}

// changeFeed is one request's subscription to an operation's changes, for
// long-polls and event streams alike: read the latest state, wait for the
// next change, again, until the request should end.
type changeFeed struct {
	m          *Middleware
	ctx        context.Context
	id         string
	changes    <-chan struct{}
	stop       func()
	serverDone <-chan struct{}
}

// subscribe starts watching the operation for ctx's request. The watch is
// open before the first read, so that no change between the two is missed.
// The caller must call stop.
func (m *Middleware) subscribe(ctx context.Context, id string) (*changeFeed, error) {
	changes, stop, err := m.cfg.Backend.Watch(ctx, id)
	if err != nil {
		return nil, err
	}
	return &changeFeed{m: m, ctx: ctx, id: id, changes: changes, stop: stop, serverDone: m.serverShutdown(ctx)}, nil
}

// latest reads the operation as it is now.
func (f *changeFeed) latest() (*backend.Operation, error) {
	ctx, cancel := storeContext(f.ctx)
	defer cancel()
	return f.m.cfg.Backend.Get(ctx, f.id)
}

// wake is why changeFeed.wait returned.
type wake int

const (
	changed wake = iota // the operation changed: read it again
	ticked              // tick fired
	ended               // the request should end: timeout, client gone, shutdown
)

// wait blocks until the operation changes, tick fires, or the request
// should end. A nil timeout or tick never fires.
func (f *changeFeed) wait(timeout, tick <-chan time.Time) wake {
	select {
	case <-f.changes:
		return changed
	case <-tick:
		return ticked
	case <-timeout:
	case <-f.ctx.Done():
	case <-f.m.closed:
	case <-f.serverDone:
	}
	return ended
}

// serverShutdown returns a channel closed when the http.Server serving the
// request starts shutting down, or nil outside a server. Requests that wait
// for changes (long-polls, event streams) end on it as well as on the
// Middleware's own Shutdown: http.Server.Shutdown waits for every request to
// end, and it is called before the Middleware's.
func (m *Middleware) serverShutdown(ctx context.Context) <-chan struct{} {
	srv, _ := ctx.Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		return nil
	}
	if done, ok := m.servers.Load(srv); ok {
		return done.(chan struct{})
	}
	done := make(chan struct{})
	if actual, loaded := m.servers.LoadOrStore(srv, done); loaded {
		return actual.(chan struct{})
	}
	srv.RegisterOnShutdown(func() { close(done) })
	return done
}
