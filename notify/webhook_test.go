package notify_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/notify"
)

// The test vector of Standard Webhooks' reference libraries.
func TestSignMatchesTheStandardsVector(t *testing.T) {
	key, err := notify.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := notify.Sign([][]byte{key}, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}

func TestSignWithSeveralSecretsSignsWithEach(t *testing.T) {
	a, b := testKey(1), testKey(2)
	got := notify.Sign([][]byte{a, b}, "id", time.Unix(1, 0), []byte("body"))
	parts := strings.Split(got, " ")
	if len(parts) != 2 || parts[0] != notify.Sign([][]byte{a}, "id", time.Unix(1, 0), []byte("body")) ||
		parts[1] != notify.Sign([][]byte{b}, "id", time.Unix(1, 0), []byte("body")) {
		t.Errorf("Sign = %q, want one signature per secret, space-separated, in order", got)
	}
}

func TestParseSecretRefusesMalformed(t *testing.T) {
	for _, s := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_!!!", "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 8))} {
		if _, err := notify.ParseSecret(s); err == nil {
			t.Errorf("ParseSecret(%q) = nil error", s)
		}
	}
}

func testKey(seed byte) []byte {
	key := make([]byte, 32)
	for i := range key {
		key[i] = seed + byte(i)
	}
	return key
}

func testSecret(seed byte) string {
	return notify.SecretPrefix + base64.StdEncoding.EncodeToString(testKey(seed))
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

func newWebhooks(t *testing.T, cfg notify.WebhookConfig) *notify.Webhooks {
	t.Helper()
	if cfg.Secrets == nil {
		cfg.Secrets = []string{testSecret(1)}
	}
	w, err := notify.NewWebhooks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.CloseIdleConnections)
	return w
}

func testEvent() *notify.Event {
	return &notify.Event{
		SpecVersion: notify.SpecVersion, ID: "op1:succeeded", Source: "https://example.com/operations/",
		Type: notify.TypeSucceeded, Subject: "op1", Time: time.Unix(1700000000, 0).UTC(),
		DataContentType: "application/json", Data: json.RawMessage(`{"id":"op1"}`),
	}
}

// verify checks a received webhook as a receiver would, independently of
// Sign: every signature in the header is the HMAC of id.timestamp.body.
func verify(t *testing.T, r *http.Request, body []byte, keys ...[]byte) {
	t.Helper()
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
		t.Errorf("webhook-timestamp %q is not unix seconds", ts)
	}
	sigs := strings.Split(r.Header.Get("webhook-signature"), " ")
	if len(sigs) != len(keys) {
		t.Fatalf("webhook-signature %q: %d signatures, want %d", r.Header.Get("webhook-signature"), len(sigs), len(keys))
	}
	for i, key := range keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "."))
		mac.Write(body)
		if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); sigs[i] != want {
			t.Errorf("signature %d = %q, want %q", i, sigs[i], want)
		}
	}
}

func TestPostSendsASignedCloudEvent(t *testing.T) {
	received := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != notify.ContentType {
			t.Errorf("got %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		if r.Header.Get("webhook-id") != "op1:succeeded" {
			t.Errorf("webhook-id = %q", r.Header.Get("webhook-id"))
		}
		verify(t, r, body, testKey(1), testKey(2))
		var ev notify.Event
		if err := json.Unmarshal(body, &ev); err != nil || ev.Type != notify.TypeSucceeded || string(ev.Data) != `{"id":"op1"}` {
			t.Errorf("body %s: %v", body, err)
		}
		w.WriteHeader(http.StatusNoContent)
		received <- struct{}{}
	}))
	defer srv.Close()
	w := newWebhooks(t, notify.WebhookConfig{Secrets: []string{testSecret(1), testSecret(2)}, AllowNetworks: loopback})
	status, err := w.Post(t.Context(), srv.URL+"/hook", testEvent())
	if err != nil || status != http.StatusNoContent {
		t.Fatalf("Post = %d, %v; want 204, nil", status, err)
	}
	<-received
}

func TestPostDoesNotFollowRedirects(t *testing.T) {
	followed := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed <- struct{}{}
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	w := newWebhooks(t, notify.WebhookConfig{AllowNetworks: loopback})
	status, err := w.Post(t.Context(), srv.URL+"/hook", testEvent())
	var statusErr *notify.StatusError
	if status != http.StatusTemporaryRedirect || !errors.As(err, &statusErr) || statusErr.Code != 307 {
		t.Errorf("Post = %d, %v; want 307 as a failed attempt", status, err)
	}
	select {
	case <-followed:
		t.Error("the redirect was followed")
	default:
	}
}

func TestPostFailsOnNon2xx(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	defer srv.Close()
	w := newWebhooks(t, notify.WebhookConfig{AllowNetworks: loopback})
	if status, err := w.Post(t.Context(), srv.URL, testEvent()); status != 500 || err == nil {
		t.Errorf("Post = %d, %v; want 500 and an error", status, err)
	}
}

// A receiver that answers 200 and then streams forever does not hold the
// attempt: a few KiB are read, then the connection is dropped.
func TestPostReadsABoundedAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		chunk := []byte(strings.Repeat("x", 1024))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	w := newWebhooks(t, notify.WebhookConfig{AllowNetworks: loopback, Timeout: time.Minute})
	if status, err := w.Post(t.Context(), srv.URL, testEvent()); status != 200 || err != nil {
		t.Errorf("Post = %d, %v; want 200, nil", status, err)
	}
}

// "localhost" resolves to a loopback address, which is refused at connect
// time when loopback is not allowed: nothing reaches the receiver.
func TestPostRefusesPrivateAddressesAtConnectTime(t *testing.T) {
	reached := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached <- struct{}{} }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	w := newWebhooks(t, notify.WebhookConfig{})
	for _, target := range []string{"http://localhost:" + port + "/hook", srv.URL} {
		_, err := w.Post(t.Context(), target, testEvent())
		if !errors.Is(err, notify.ErrAddressNotAllowed) {
			t.Errorf("Post(%s) = %v, want ErrAddressNotAllowed", target, err)
		}
	}
	select {
	case <-reached:
		t.Error("the receiver was reached")
	default:
	}
}

func TestPostRedactsCredentialsFromErrors(t *testing.T) {
	w := newWebhooks(t, notify.WebhookConfig{})
	_, err := w.Post(t.Context(), "http://user:secret-password@127.0.0.1:1/hook?token=secret-token", testEvent())
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("Post error = %v, want one without the URL's credentials", err)
	}
}
