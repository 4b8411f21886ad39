package asyncreply_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// TestMain fails the run if a test leaves a goroutine behind: every test's
// cleanup closes its server and shuts its Middleware down, which must stop
// the workers, the sweeper and every replayed handler.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait in these tests, so that a bug fails a test
// instead of hanging the run. It is testwait's Timeout, so that every wait
// here gives up as testwait.Recv does.
const waitLimit = testwait.Timeout

var discardLogger = slog.New(slog.DiscardHandler)

// bundle is one application served through asyncreply.
type bundle struct {
	srv    *httptest.Server
	client *http.Client // does not follow redirects
	ar     *asyncreply.Middleware

	shutByTest atomic.Bool // the test called shutdown itself
}

// setup serves routes through a Middleware configured with cfg. The cleanup
// closes the server, then shuts the Middleware down.
func setup(t *testing.T, cfg asyncreply.Config, routes http.Handler) *bundle {
	t.Helper()
	return newBundle(t, cfg, routes, httptest.NewServer)
}

func newBundle(t *testing.T, cfg asyncreply.Config, routes http.Handler, serve func(http.Handler) *httptest.Server) *bundle {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = discardLogger
	}
	ar, err := asyncreply.New(cfg)
	if err != nil {
		t.Fatalf("asyncreply.New: %v", err)
	}
	srv := serve(ar.Handler(routes))
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	client.Timeout = 3 * waitLimit
	b := &bundle{srv: srv, client: client, ar: ar}
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := ar.Shutdown(ctx); err != nil && !b.shutByTest.Load() {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return b
}

// shutdown shuts the Middleware down from the test itself.
func (b *bundle) shutdown(ctx context.Context) error {
	b.shutByTest.Store(true)
	return b.ar.Shutdown(ctx)
}

// url makes a path absolute on the test server; absolute URLs pass as is.
func (b *bundle) url(target string) string {
	if strings.HasPrefix(target, "/") {
		return b.srv.URL + target
	}
	return target
}

// reply is a response read whole.
type reply struct {
	code   int
	header http.Header
	body   []byte
}

func (r reply) String() string {
	return r.header.Get("Content-Type") + " " + http.StatusText(r.code) + ": " + string(r.body)
}

// request builds a request; header holds name/value pairs ("Host" sets the
// request's Host).
func (b *bundle) request(t *testing.T, method, target, body string, header ...string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, b.url(target), rd)
	if err != nil {
		t.Fatalf("building %s %s: %v", method, target, err)
	}
	if len(header)%2 != 0 {
		t.Fatalf("odd header pairs %q", header)
	}
	for i := 0; i < len(header); i += 2 {
		if http.CanonicalHeaderKey(header[i]) == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Add(header[i], header[i+1])
	}
	return req
}

// do sends a request and reads the whole response. It must be called from
// the test's goroutine; tryDo is for other goroutines.
func (b *bundle) do(t *testing.T, method, target, body string, header ...string) reply {
	t.Helper()
	r, err := b.send(b.request(t, method, target, body, header...))
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	return r
}

func (b *bundle) send(req *http.Request) (reply, error) {
	resp, err := b.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{code: resp.StatusCode, header: resp.Header, body: body}, nil
}

// submit sends a request that must be accepted, and returns the 202 and its
// monitor URL.
func (b *bundle) submit(t *testing.T, method, target, body string, header ...string) (reply, string) {
	t.Helper()
	r := b.do(t, method, target, body, header...)
	if r.code != http.StatusAccepted {
		t.Fatalf("%s %s = %s, want 202 Accepted", method, target, r)
	}
	loc := r.header.Get("Location")
	if loc == "" {
		t.Fatalf("%s %s: 202 without Location", method, target)
	}
	return r, loc
}

// finish long-polls the monitor URL until it stops answering 202, and
// returns the first other answer.
func (b *bundle) finish(t *testing.T, monitor string, header ...string) reply {
	t.Helper()
	header = append([]string{"Prefer", "wait=" + waitSeconds()}, header...)
	for range 3 {
		r := b.do(t, http.MethodGet, monitor, "", header...)
		if r.code != http.StatusAccepted {
			return r
		}
	}
	t.Fatalf("operation %s still not finished after %s", monitor, 3*waitLimit)
	return reply{}
}

func waitSeconds() string { return strings.TrimSuffix(waitLimit.String(), "s") }

// opID is the operation ID at the end of a monitor URL.
func opID(t *testing.T, monitor string) string {
	t.Helper()
	u, err := url.Parse(monitor)
	if err != nil {
		t.Fatalf("monitor URL %q: %v", monitor, err)
	}
	id, ok := strings.CutPrefix(u.Path, asyncreply.DefaultPrefix)
	if !ok || strings.Contains(id, "/") || id == "" {
		t.Fatalf("monitor URL %q is not <origin>%s<id>", monitor, asyncreply.DefaultPrefix)
	}
	return id
}

// monitorForm is the shape of every monitor URL of a default test server.
var monitorForm = regexp.MustCompile(`^http://127\.0\.0\.1:\d+/operations/[A-Za-z0-9_-]{22}$`)

// send delivers v on ch within waitLimit.
func send[T any](t *testing.T, ch chan<- T, v T, what string) {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case ch <- v:
	case <-timer.C:
		t.Fatalf("timed out after %s handing over %s", waitLimit, what)
	}
}

// signal is a one-shot broadcast that may be fired more than once.
type signal struct {
	ch   chan struct{}
	once sync.Once
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) fire() { s.once.Do(func() { close(s.ch) }) }

// wait blocks until s fires (true) or ctx ends (false).
func (s *signal) wait(ctx context.Context) bool {
	select {
	case <-s.ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// gate is a handler that announces every run and holds it until the test
// releases it, or until the run's context ends. Tests `defer g.release.fire()`
// so that nothing is left blocked when the cleanups shut the Middleware down.
type gate struct {
	started chan string // the operation ID of each run ("" outside a replay)
	ended   chan error  // the context cause of each run canceled before release
	release *signal
	respond http.HandlerFunc
}

func newGate(respond http.HandlerFunc) *gate {
	return &gate{
		started: make(chan string, 64),
		ended:   make(chan error, 64),
		release: newSignal(),
		respond: respond,
	}
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, _ := asyncreply.OperationID(r.Context())
	g.started <- id
	if !g.release.wait(r.Context()) {
		g.ended <- context.Cause(r.Context())
		return
	}
	g.respond(w, r)
}

// text answers 200 with body.
func text(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, body)
	}
}

// route serves h at pattern on a new ServeMux.
func route(pattern string, h http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(pattern, h)
	return mux
}

// userFromHeader is a Config.Owner that names the caller by its X-User header.
func userFromHeader(r *http.Request) (string, error) {
	if u := r.Header.Get("X-User"); u != "" {
		return u, nil
	}
	return "", errors.New("no X-User")
}

// statusDoc is the status document as a client decodes it.
type statusDoc struct {
	ID        string     `json:"id"`
	Status    string     `json:"status"`
	Done      bool       `json:"done"`
	CreatedAt time.Time  `json:"createdAt"`
	UpdatedAt time.Time  `json:"updatedAt"`
	ExpiresAt *time.Time `json:"expiresAt"`
	Progress  struct {
		Percent int    `json:"percent"`
		Message string `json:"message"`
	} `json:"progress"`
	Error            *problemDoc `json:"error"`
	ResourceLocation string      `json:"resourceLocation"`
	Links            struct {
		Self     string `json:"self"`
		Response string `json:"response"`
		Events   string `json:"events"`
	} `json:"links"`
}

type problemDoc struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// decodeDoc checks that r carries a JSON status document and decodes it.
func decodeDoc(t *testing.T, r reply) statusDoc {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q, want application/json; response: %s", ct, r)
	}
	return decodeDocBytes(t, r.body)
}

func decodeDocBytes(t *testing.T, data []byte) statusDoc {
	t.Helper()
	var doc statusDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("status document %s: %v", data, err)
	}
	return doc
}

// wantProblem checks that r is an RFC 9457 problem with the given status.
func wantProblem(t *testing.T, r reply, code int) problemDoc {
	t.Helper()
	if r.code != code {
		t.Fatalf("status = %d, want %d; response: %s", r.code, code, r)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json; response: %s", ct, r)
	}
	var p problemDoc
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem document %s: %v", r.body, err)
	}
	if p.Status != code || p.Title == "" {
		t.Fatalf("problem document %s: want status %d and a title", r.body, code)
	}
	return p
}

// objectOf decodes a JSON object keeping its members raw, to check names.
func objectOf(t *testing.T, data []byte) map[string]json.RawMessage {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatalf("JSON object %s: %v", data, err)
	}
	return obj
}

// checkKeys checks that obj has exactly the members named want.
func checkKeys(t *testing.T, what string, obj map[string]json.RawMessage, want ...string) {
	t.Helper()
	got := slices.Sorted(maps.Keys(obj))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s members = %q, want %q", what, got, want)
	}
}

// headerHas reports whether any value of the comma-separated header name
// lists token.
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name, id, data string
}

// sseStream reads Server-Sent Events from a response body.
type sseStream struct {
	resp *http.Response
	sc   *bufio.Scanner
}

// openEvents subscribes to an operation's events. The stream is closed, and
// its request canceled, when the test ends.
func (b *bundle) openEvents(t *testing.T, monitor string, header ...string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	req := b.request(t, http.MethodGet, monitor+"/events", "", header...).WithContext(ctx)
	resp, err := b.client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s/events: %v", monitor, err)
	}
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s/events = %d %s, want 200", monitor, resp.StatusCode, body)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	return &sseStream{resp: resp, sc: sc}
}

// next returns the next event, io.EOF when the stream has ended, or the
// read error (the request's deadline, when the stream hangs).
func (s *sseStream) next() (sseEvent, error) {
	var ev sseEvent
	for s.sc.Scan() {
		line := s.sc.Text()
		if line == "" {
			if ev.name != "" || ev.data != "" {
				return ev, nil
			}
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment: keep-alive
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.name = value
		case "id":
			ev.id = value
		case "data":
			if ev.data != "" {
				ev.data += "\n"
			}
			ev.data += value
		}
	}
	if err := s.sc.Err(); err != nil {
		return ev, err
	}
	return ev, io.EOF
}

// nextStatus returns the next event, which must be a status event.
func (s *sseStream) nextStatus(t *testing.T) (sseEvent, statusDoc) {
	t.Helper()
	ev, err := s.next()
	if err != nil {
		t.Fatalf("reading the event stream: %v", err)
	}
	if ev.name != "status" {
		t.Fatalf("event %q, want status; data %s", ev.name, ev.data)
	}
	return ev, decodeDocBytes(t, []byte(ev.data))
}

// wantEnd checks that the stream ends after the events read so far.
func (s *sseStream) wantEnd(t *testing.T) {
	t.Helper()
	ev, err := s.next()
	if !errors.Is(err, io.EOF) {
		t.Fatalf("event stream did not end: event %+v, error %v", ev, err)
	}
}

// spyBackend is the memory backend, watched: what was stored, and when a
// request started waiting on an operation.
type spyBackend struct {
	*memory.Backend
	watched chan string // the ID of every Watch

	mu        sync.Mutex
	created   int      // operations actually created
	requests  [][]byte // the stored Request of every Create call
	responses [][]byte // the Response of every Complete call
}

func newSpy() *spyBackend {
	return &spyBackend{Backend: memory.New(memory.Config{}), watched: make(chan string, 256)}
}

func (s *spyBackend) Create(ctx context.Context, op *backend.Operation) (*backend.Operation, bool, error) {
	stored, created, err := s.Backend.Create(ctx, op)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, bytes.Clone(op.Request))
	if created {
		s.created++
	}
	return stored, created, err
}

func (s *spyBackend) Complete(ctx context.Context, id string, outcome backend.Outcome) (bool, error) {
	s.mu.Lock()
	s.responses = append(s.responses, bytes.Clone(outcome.Response))
	s.mu.Unlock()
	return s.Backend.Complete(ctx, id, outcome)
}

func (s *spyBackend) Watch(ctx context.Context, id string) (<-chan struct{}, func(), error) {
	changes, stop, err := s.Backend.Watch(ctx, id)
	select {
	case s.watched <- id:
	default:
	}
	return changes, stop, err
}

func (s *spyBackend) createdCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

func (s *spyBackend) stored() (requests, responses [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests), slices.Clone(s.responses)
}

// flakyBackend is the memory backend behind a store that can go down.
type flakyBackend struct {
	*memory.Backend
	down atomic.Bool
}

func (f *flakyBackend) err() error {
	if f.down.Load() {
		return fmt.Errorf("flaky store: connection refused: %w", backend.ErrUnavailable)
	}
	return nil
}

func (f *flakyBackend) Create(ctx context.Context, op *backend.Operation) (*backend.Operation, bool, error) {
	if err := f.err(); err != nil {
		return nil, false, err
	}
	return f.Backend.Create(ctx, op)
}

func (f *flakyBackend) Get(ctx context.Context, id string) (*backend.Operation, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Backend.Get(ctx, id)
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// lockedBuffer is a log destination safe for concurrent handlers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
