package asyncreply_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/backend/sqlite"
	"github.com/asyncreply/asyncreply/internal/testwait"
	"github.com/asyncreply/asyncreply/notify"
)

var (
	webhookKey    = []byte("0123456789abcdef0123456789abcdef")
	webhookSecret = notify.SecretPrefix + base64.StdEncoding.EncodeToString(webhookKey)
	loopbackNets  = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
)

// webhook is one request a receiver got, its signature verified.
type webhook struct {
	id    string
	event notify.Event
	doc   statusDoc
}

// receiver is a webhook endpoint that verifies every request as a consumer
// would, and answers with its codes in turn (the last one once they run
// out).
type receiver struct {
	srv   *httptest.Server
	hooks chan webhook

	mu    sync.Mutex
	codes []int
}

func newReceiver(t *testing.T, codes ...int) *receiver {
	t.Helper()
	rc := &receiver{hooks: make(chan webhook, 100), codes: codes}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			t.Error("a redirect was followed")
			return
		}
		body, _ := io.ReadAll(r.Body)
		id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
		mac := hmac.New(sha256.New, webhookKey)
		mac.Write([]byte(id + "." + ts + "."))
		mac.Write(body)
		if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); r.Header.Get("webhook-signature") != want {
			t.Errorf("webhook-signature = %q, want %q", r.Header.Get("webhook-signature"), want)
		}
		if ct := r.Header.Get("Content-Type"); ct != notify.ContentType {
			t.Errorf("Content-Type = %q, want %q", ct, notify.ContentType)
		}
		var h webhook
		h.id = id
		if err := json.Unmarshal(body, &h.event); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		h.doc = decodeDocBytes(t, h.event.Data)
		rc.mu.Lock()
		code := rc.codes[0]
		if len(rc.codes) > 1 {
			rc.codes = rc.codes[1:]
		}
		rc.mu.Unlock()
		if code/100 == 3 {
			http.Redirect(w, r, "/elsewhere", code)
		} else {
			w.WriteHeader(code)
		}
		rc.hooks <- h
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) url(path string) string { return rc.srv.URL + path }

// noMore checks that the receiver got nothing further. Called after the
// Middleware shut down, when no delivery can be under way.
func (rc *receiver) noMore(t *testing.T) {
	t.Helper()
	select {
	case h := <-rc.hooks:
		t.Errorf("an unexpected webhook: %s %+v", h.id, h.event)
	default:
	}
}

type callbackDoc struct {
	URL         string     `json:"url"`
	Attempts    int        `json:"attempts"`
	LastStatus  int        `json:"lastStatus"`
	DeliveredAt *time.Time `json:"deliveredAt"`
	Failed      bool       `json:"failed"`
	LastError   string     `json:"lastError"`
}

func callbacksOf(t *testing.T, r reply) []callbackDoc {
	t.Helper()
	var doc struct {
		Callbacks []callbackDoc `json:"callbacks"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("status document %s: %v", r.body, err)
	}
	return doc.Callbacks
}

// notifyBackends are the backends the webhook tests run on.
var notifyBackends = []struct {
	name string
	new  func(t *testing.T) asyncreply.Backend
}{
	{"memory", func(t *testing.T) asyncreply.Backend { return memory.New(memory.Config{}) }},
	{"sqlite", func(t *testing.T) asyncreply.Backend {
		b, err := sqlite.New(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "ops.db"), Logger: discardLogger})
		if err != nil {
			t.Fatalf("sqlite.New: %v", err)
		}
		return b
	}},
}

func notifyConfig(b asyncreply.Backend) asyncreply.Config {
	return asyncreply.Config{
		Backend: b,
		Notify: asyncreply.NotifyConfig{
			Secrets:       []string{webhookSecret},
			CallbackHosts: []string{"127.0.0.1"},
			AllowNetworks: loopbackNets,
			RetryDelay:    time.Millisecond,
			MaxRetryDelay: 10 * time.Millisecond,
		},
	}
}

func callbackPrefer(u string) string { return `respond-async, callback; url="` + u + `"` }

// shutdownNow shuts the Middleware down, after which no delivery is under
// way and its records are final.
func shutdownNow(t *testing.T, b *bundle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := b.shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestCallbackDeliversOneVerifiedEvent(t *testing.T) {
	for _, be := range notifyBackends {
		t.Run(be.name, func(t *testing.T) {
			rc := newReceiver(t, http.StatusNoContent)
			b := setup(t, notifyConfig(be.new(t)), route("/report", asyncreply.Async(text("done"))))
			r, monitor := b.submit(t, http.MethodPost, "/report", "", "Prefer", callbackPrefer(rc.url("/hook")))
			if !headerHas(r.header, "Preference-Applied", "callback") || !headerHas(r.header, "Preference-Applied", "respond-async") {
				t.Errorf("Preference-Applied = %q, want callback and respond-async", r.header.Values("Preference-Applied"))
			}
			if cbs := callbacksOf(t, r); len(cbs) != 1 || cbs[0].URL != rc.url("/hook") || cbs[0].Attempts != 0 {
				t.Errorf("202's callbacks = %+v, want the callback, no attempt yet", cbs)
			}
			id := opID(t, monitor)

			h := testwait.Recv(t, rc.hooks, "the webhook")
			if h.id != id+":succeeded" || h.event.ID != h.id || h.event.Type != notify.TypeSucceeded || h.event.Subject != id {
				t.Errorf("webhook %s: %+v", h.id, h.event)
			}
			if h.doc.ID != id || h.doc.Status != "Succeeded" || h.doc.Links.Self != monitor || h.doc.ResourceLocation != monitor+"/response" {
				t.Errorf("event data = %+v, want the succeeded status document with absolute links", h.doc)
			}
			if !strings.HasPrefix(h.event.Source, b.srv.URL) {
				t.Errorf("source = %q, want the monitor prefix", h.event.Source)
			}
			shutdownNow(t, b)
			rc.noMore(t)
			cbs := callbacksOf(t, b.do(t, http.MethodGet, monitor+"/status", ""))
			if len(cbs) != 1 || cbs[0].Attempts != 1 || cbs[0].LastStatus != 204 || cbs[0].DeliveredAt == nil || cbs[0].Failed {
				t.Errorf("callbacks = %+v, want one delivered attempt", cbs)
			}
		})
	}
}

func TestCallbackIsRetriedAfterAFailure(t *testing.T) {
	for _, be := range notifyBackends {
		t.Run(be.name, func(t *testing.T) {
			rc := newReceiver(t, http.StatusInternalServerError, http.StatusOK)
			b := setup(t, notifyConfig(be.new(t)), route("/report", asyncreply.Async(text("done"))))
			_, monitor := b.submit(t, http.MethodPost, "/report", "", "Prefer", callbackPrefer(rc.url("/hook")))
			first := testwait.Recv(t, rc.hooks, "the first attempt")
			second := testwait.Recv(t, rc.hooks, "the attempt after a 500")
			if first.id != second.id || first.event.ID != second.event.ID {
				t.Errorf("the retry's id %q differs from the first's %q", second.id, first.id)
			}
			shutdownNow(t, b)
			rc.noMore(t)
			cbs := callbacksOf(t, b.do(t, http.MethodGet, monitor+"/status", ""))
			if len(cbs) != 1 || cbs[0].Attempts != 2 || cbs[0].LastStatus != 200 || cbs[0].DeliveredAt == nil {
				t.Errorf("callbacks = %+v, want 2 attempts, delivered", cbs)
			}
		})
	}
}

// A redirect is a failed attempt, never followed; with no time left to
// retry, the callback shows as failed.
func TestCallbackRedirectIsNotFollowed(t *testing.T) {
	rc := newReceiver(t, http.StatusTemporaryRedirect)
	cfg := notifyConfig(memory.New(memory.Config{}))
	cfg.Notify.GiveUpAfter = time.Nanosecond
	b := setup(t, cfg, route("/report", asyncreply.Async(text("done"))))
	_, monitor := b.submit(t, http.MethodPost, "/report", "", "Prefer", callbackPrefer(rc.url("/hook")))
	testwait.Recv(t, rc.hooks, "the attempt")
	shutdownNow(t, b)
	rc.noMore(t)
	cbs := callbacksOf(t, b.do(t, http.MethodGet, monitor+"/status", ""))
	if len(cbs) != 1 || cbs[0].Attempts != 1 || cbs[0].LastStatus != 307 || cbs[0].DeliveredAt != nil || !cbs[0].Failed ||
		cbs[0].LastError != "the callback answered 307" {
		t.Errorf("callbacks = %+v, want one failed attempt answered 307", cbs)
	}
}

func TestCallbackToAHostNotAllowedIsIgnored(t *testing.T) {
	rc := newReceiver(t, http.StatusOK)
	cfg := notifyConfig(memory.New(memory.Config{}))
	cfg.Notify.CallbackHosts = []string{"hooks.example.com"}
	b := setup(t, cfg, route("/report", asyncreply.Async(text("done"))))
	r, monitor := b.submit(t, http.MethodPost, "/report", "", "Prefer", callbackPrefer(rc.url("/hook")))
	if headerHas(r.header, "Preference-Applied", "callback") {
		t.Errorf("Preference-Applied = %q echoes a callback that was ignored", r.header.Values("Preference-Applied"))
	}
	b.finish(t, monitor)
	shutdownNow(t, b)
	rc.noMore(t)
	if cbs := callbacksOf(t, b.do(t, http.MethodGet, monitor+"/status", "")); len(cbs) != 0 {
		t.Errorf("callbacks = %+v, want none", cbs)
	}
}

func TestCallbackIgnoredWithoutAllowList(t *testing.T) {
	rc := newReceiver(t, http.StatusOK)
	cfg := notifyConfig(memory.New(memory.Config{}))
	cfg.Notify.CallbackHosts = nil
	b := setup(t, cfg, route("/report", asyncreply.Async(text("done"))))
	r, monitor := b.submit(t, http.MethodPost, "/report", "", "Prefer", callbackPrefer(rc.url("/hook")))
	if headerHas(r.header, "Preference-Applied", "callback") {
		t.Errorf("Preference-Applied = %q, want no callback", r.header.Values("Preference-Applied"))
	}
	b.finish(t, monitor)
	shutdownNow(t, b)
	rc.noMore(t)
}

// "localhost" resolves to loopback, which is refused at connect time when
// not allowed: nothing is sent, and the callback shows as failed.
func TestCallbackToAPrivateAddressIsRefused(t *testing.T) {
	for _, be := range notifyBackends {
		t.Run(be.name, func(t *testing.T) {
			rc := newReceiver(t, http.StatusOK)
			_, port, _ := net.SplitHostPort(rc.srv.Listener.Addr().String())
			cfg := notifyConfig(be.new(t))
			cfg.Notify.CallbackHosts = []string{"localhost"}
			cfg.Notify.AllowNetworks = nil
			refused := make(chan struct{}, 1)
			cfg.Logger = slog.New(signalHandler{"refused a webhook", refused})
			b := setup(t, cfg, route("/report", asyncreply.Async(text("done"))))
			r, monitor := b.submit(t, http.MethodPost, "/report", "", "Prefer", callbackPrefer("http://localhost:"+port+"/hook"))
			if !headerHas(r.header, "Preference-Applied", "callback") {
				t.Errorf("Preference-Applied = %q, want callback: its host is allowed", r.header.Values("Preference-Applied"))
			}
			testwait.Recv(t, refused, "the refusal of the callback")
			shutdownNow(t, b)
			rc.noMore(t)
			cbs := callbacksOf(t, b.do(t, http.MethodGet, monitor+"/status", ""))
			if len(cbs) != 1 || !cbs[0].Failed || cbs[0].Attempts != 1 || cbs[0].DeliveredAt != nil || cbs[0].LastError != "the callback's address is not allowed" {
				t.Errorf("callbacks = %+v, want one refused attempt", cbs)
			}
		})
	}
}

// signalHandler is a log handler that signals each record whose message
// contains substr.
type signalHandler struct {
	substr string
	ch     chan<- struct{}
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h signalHandler) WithGroup(string) slog.Handler            { return h }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return nil
}

type senderFunc func(ctx context.Context, ev *notify.Event) error

func (f senderFunc) Send(ctx context.Context, ev *notify.Event) error { return f(ctx, ev) }

// The route's notify URL and the publishers get every transition, a
// cancellation included, and neither shows in the status document.
func TestRouteNotifyAndPublishersGetEveryTransition(t *testing.T) {
	rc := newReceiver(t, http.StatusOK)
	published := make(chan *notify.Event, 10)
	cfg := notifyConfig(memory.New(memory.Config{}))
	cfg.Notify.Publish = []asyncreply.NamedSender{{Name: "bus", Sender: senderFunc(func(ctx context.Context, ev *notify.Event) error {
		published <- ev
		return nil
	})}}
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/report", asyncreply.AsyncWith(text("done"), asyncreply.RouteOptions{Notify: rc.url("/ops")}))
	mux.Handle("/slow", asyncreply.AsyncWith(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), asyncreply.RouteOptions{Notify: rc.url("/ops")}))
	b := setup(t, cfg, mux)
	defer close(release)

	_, done := b.submit(t, http.MethodPost, "/report", "")
	h := testwait.Recv(t, rc.hooks, "the route's webhook")
	if h.event.Type != notify.TypeSucceeded || h.doc.ID != opID(t, done) {
		t.Errorf("route webhook = %+v", h.event)
	}
	if ev := testwait.Recv(t, published, "the published event"); ev.Type != notify.TypeSucceeded || ev.Subject != opID(t, done) {
		t.Errorf("published = %+v", ev)
	}
	if cbs := callbacksOf(t, b.do(t, http.MethodGet, done+"/status", "")); len(cbs) != 0 {
		t.Errorf("callbacks = %+v: the operator's targets are shown", cbs)
	}

	_, slow := b.submit(t, http.MethodPost, "/slow", "")
	if r := b.do(t, http.MethodDelete, slow, ""); r.code != http.StatusNoContent {
		t.Fatalf("DELETE = %s", r)
	}
	h = testwait.Recv(t, rc.hooks, "the cancellation's webhook")
	if h.event.Type != notify.TypeCanceled || h.id != opID(t, slow)+":canceled" {
		t.Errorf("cancellation webhook = %s %+v", h.id, h.event)
	}
	if ev := testwait.Recv(t, published, "the published cancellation"); ev.Type != notify.TypeCanceled {
		t.Errorf("published = %+v", ev)
	}
}

func TestNotifyConfigIsValidated(t *testing.T) {
	for _, tc := range []struct {
		field string
		cfg   asyncreply.NotifyConfig
	}{
		{"Notify.Secrets", asyncreply.NotifyConfig{Secrets: []string{"not-a-secret"}}},
		{"Notify.CallbackHosts", asyncreply.NotifyConfig{CallbackHosts: []string{"hooks.example.com"}}},
		{"Notify.URL", asyncreply.NotifyConfig{URL: "https://hooks.example.com/"}},
		{"Notify.URL", asyncreply.NotifyConfig{Secrets: []string{webhookSecret}, URL: "ftp://hooks.example.com/"}},
		{"Notify.Publish", asyncreply.NotifyConfig{Publish: []asyncreply.NamedSender{{Name: "bus"}}}},
		{"Notify.RetryDelay", asyncreply.NotifyConfig{RetryDelay: -time.Second}},
	} {
		err := asyncreply.Config{Notify: tc.cfg}.Validate()
		if err == nil || !strings.Contains(err.Error(), "Config."+tc.field+":") {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.field)
		}
	}
}

var _ backend.Notifier = (*memory.Backend)(nil)
