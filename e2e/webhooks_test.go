package e2e_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/internal/testdb"
)

// webhookReceiver verifies every webhook it is sent, as a consumer would,
// and answers 503 while it is down.
type webhookReceiver struct {
	t    *testing.T
	key  []byte
	srv  *httptest.Server
	down atomic.Bool

	mu       sync.Mutex
	failed   map[string]int  // path + " " + webhook-id → attempts answered 503
	received map[string]bool // path + " " + webhook-id → acknowledged once at least
	changed  chan struct{}
}

func newWebhookReceiver(t *testing.T, key []byte) *webhookReceiver {
	rc := &webhookReceiver{t: t, key: key, failed: map[string]int{}, received: map[string]bool{}, changed: make(chan struct{}, 1)}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *webhookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	mac := hmac.New(sha256.New, rc.key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); r.Header.Get("webhook-signature") != want {
		rc.t.Errorf("webhook %s: signature %q, want %q", id, r.Header.Get("webhook-signature"), want)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev struct {
		ID, Type, Subject string
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID != id || ev.Type != "asyncreply.operation.succeeded" {
		rc.t.Errorf("webhook %s: event %s (%v)", id, body, err)
	}
	key := r.URL.Path + " " + id
	rc.mu.Lock()
	if rc.down.Load() {
		rc.failed[key]++
		w.WriteHeader(http.StatusServiceUnavailable)
	} else {
		rc.received[key] = true
		w.WriteHeader(http.StatusNoContent)
	}
	rc.mu.Unlock()
	select {
	case rc.changed <- struct{}{}:
	default:
	}
}

// await waits until cond holds of what the receiver saw, for at most
// limit.
func (rc *webhookReceiver) await(t *testing.T, limit time.Duration, what string, cond func(failed map[string]int, received map[string]bool) bool) {
	t.Helper()
	deadline := time.After(limit)
	for {
		rc.mu.Lock()
		ok := cond(rc.failed, rc.received)
		rc.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-rc.changed:
		case <-deadline:
			rc.mu.Lock()
			defer rc.mu.Unlock()
			t.Fatalf("timed out after %v waiting for %s; failed %v, received %v", limit, what, rc.failed, rc.received)
		}
	}
}

// TestWebhooksSurviveACrash: operations finish while the receiver is down,
// the gateway is killed with their deliveries still failing, and once it
// is restarted and the receiver is back, every operation's events arrive,
// signed, to the client's callback and to the route's notify URL alike.
func TestWebhooksSurviveACrash(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testWebhooksSurviveACrash(t, "sqlite://"+filepath.Join(t.TempDir(), "ops.db"))
	})
	t.Run("postgres", func(t *testing.T) {
		pool := testdb.Pool(t, 2)
		u, err := neturl.Parse(testdb.URL())
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("schema", testdb.Schema(t, pool))
		u.RawQuery = q.Encode()
		// A short heartbeat, so that the killed gateway's running
		// deliveries are known dead, and rescued, within seconds.
		testWebhooksSurviveACrash(t, u.String(), "--heartbeat", "200ms")
	})
}

func testWebhooksSurviveACrash(t *testing.T, backendURL string, extra ...string) {
	key := []byte("crash-test-signing-key-of-32-byte")
	t.Setenv("ASYNCREPLY_WEBHOOK_SECRET", "whsec_"+base64.StdEncoding.EncodeToString(key))
	rc := newWebhookReceiver(t, key)
	rc.down.Store(true)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "report")
	}))
	defer upstream.Close()

	args := append([]string{"--upstream", upstream.URL, "--backend", backendURL, "--async", "POST /report",
		"--callback-allow", "127.0.0.1", "--webhook-allow-network", "127.0.0.0/8",
		"--notify", rc.srv.URL + "/ops", "--webhook-retry", "100ms"}, extra...)
	start := time.Now()
	gw, url := startGateway(t, "127.0.0.1:0", args...)
	t.Logf("gateway serving after %v", time.Since(start))

	const n = 5
	var ids []string
	for range n {
		req, _ := http.NewRequest(http.MethodPost, url+"/report", nil)
		req.Header.Set("Prefer", `respond-async, callback; url="`+rc.srv.URL+`/callback"`)
		resp, err := probeClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || !strings.Contains(resp.Header.Get("Preference-Applied"), "callback") {
			t.Fatalf("submit: %d, Preference-Applied %q", resp.StatusCode, resp.Header.Get("Preference-Applied"))
		}
		location := resp.Header.Get("Location")
		ids = append(ids, location[strings.LastIndex(location, "/")+1:])
	}
	every := func(seen func(key string) bool) bool {
		for _, id := range ids {
			for _, path := range []string{"/callback", "/ops"} {
				if !seen(path + " " + id + ":succeeded") {
					return false
				}
			}
		}
		return true
	}
	// Every operation finished, and each of its deliveries failed at least
	// once: they are in the outbox when the gateway dies.
	rc.await(t, answerLimit, "a failed attempt of every delivery", func(failed map[string]int, _ map[string]bool) bool {
		return every(func(k string) bool { return failed[k] > 0 })
	})
	t.Logf("every delivery failed once by %v", time.Since(start))
	gw.kill(t)

	rc.down.Store(false)
	_, url = startGateway(t, "127.0.0.1:0", args...)
	rc.await(t, restartLimit, "every event after the restart", func(_ map[string]int, received map[string]bool) bool {
		return every(func(k string) bool { return received[k] })
	})

	t.Logf("every event received by %v", time.Since(start))
	// The status document shows the client's callback delivered. An
	// attempt cut short by the kill is not counted: the receiver answered,
	// but the process died before recording it. The last attempts are
	// recorded just after the receiver answered them: the document is read
	// again until they are.
	deadline := time.Now().Add(answerLimit)
	for _, id := range ids {
		for {
			resp, err := probeClient.Get(url + "/operations/" + id + "/status")
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Callbacks []struct {
					URL         string     `json:"url"`
					Attempts    int        `json:"attempts"`
					DeliveredAt *time.Time `json:"deliveredAt"`
				} `json:"callbacks"`
			}
			err = json.NewDecoder(resp.Body).Decode(&doc)
			resp.Body.Close()
			if err != nil || len(doc.Callbacks) != 1 || doc.Callbacks[0].Attempts < 1 || doc.Callbacks[0].URL != rc.srv.URL+"/callback" {
				t.Fatalf("operation %s: callbacks %+v (%v), want the client's one", id, doc.Callbacks, err)
			}
			if doc.Callbacks[0].DeliveredAt != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("operation %s: callbacks %+v, want one delivered", id, doc.Callbacks)
			}
			time.Sleep(20 * time.Millisecond) // the document signals nothing: poll it
		}
	}
}
