package gateway_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/gateway"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// deferringApp is an application that speaks the handshake as the Rails gem
// and the Node middleware do: it defers POST /items?slow=1 when the gateway
// says it may, runs the replay for real (reporting its progress, then
// waiting for release), and answers everything else at once.
type deferringApp struct {
	firstArrivals chan http.Header
	replays       chan seen
	progressed    chan string // the progress URL, once a report was accepted
	release       chan struct{}
	deferWith     string // the Asyncreply-Defer value; "1" when empty
}

func newDeferringApp() *deferringApp {
	return &deferringApp{
		firstArrivals: make(chan http.Header, 16),
		replays:       make(chan seen, 16),
		progressed:    make(chan string, 16),
		release:       make(chan struct{}),
	}
}

func (a *deferringApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(gateway.OperationHeader) != "" {
		progressURL := r.Header.Get(gateway.ProgressHeader)
		a.replays <- record(r)
		if progressURL != "" {
			resp, err := http.Post(progressURL, "application/json", strings.NewReader(`{"percent": 40, "message": "halfway"}`))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					a.progressed <- progressURL
				}
			}
		}
		select {
		case <-a.release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Asyncreply-Internal", "never shown")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "made for "+r.Header.Get("X-User"))
		return
	}
	a.firstArrivals <- r.Header.Clone()
	if r.Header.Get(gateway.DeferrableHeader) == "1" && r.URL.Query().Get("slow") == "1" {
		io.Copy(io.Discard, r.Body)
		http.SetCookie(w, &http.Cookie{Name: "deferral", Value: "never shown"})
		w.Header().Set(gateway.DeferHeader, cmpOr(a.deferWith, "1"))
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, "the deferral's body, never shown")
		return
	}
	w.Header().Set("Asyncreply-Debug", "never shown")
	io.WriteString(w, "quick")
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func post(t *testing.T, b *bundle, target string, body []byte, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.gateway.URL+target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	return b.do(t, req)
}

func noHandshakeHeaders(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	for name := range resp.Header {
		if strings.HasPrefix(strings.ToLower(name), "asyncreply-") {
			t.Errorf("%s carries %s: %q", what, name, resp.Header[name])
		}
	}
}

func TestApplicationDefersThroughTheHandshake(t *testing.T) {
	t.Parallel()
	app := newDeferringApp()
	srv := httptest.NewUnstartedServer(nil)
	progressBase := "http://" + srv.Listener.Addr().String()
	b := setupServing(t, app, gateway.Config{Owner: gateway.OwnerHeader("X-User"), ProgressURL: progressBase}, srv)
	payload := append([]byte("binary \x00\xff body\r\n"), bytes.Repeat([]byte{0xfe}, 70_000)...)

	resp, body := post(t, b, "/items?slow=1", payload, "X-User", "alice")
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(resp.Header.Get("Location"), gateway.DefaultPrefix) {
		t.Fatalf("deferred POST = %d (Location %q) %s, want the gateway's 202", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if strings.Contains(body, "never shown") || len(resp.Cookies()) > 0 {
		t.Errorf("the deferral's answer reached the client: cookies %v, body %s", resp.Cookies(), body)
	}
	noHandshakeHeaders(t, "the 202", resp)
	first := testwait.Recv(t, app.firstArrivals, "the first arrival")
	if got := first.Values(gateway.DeferrableHeader); len(got) != 1 || got[0] != "1" {
		t.Errorf("first arrival's %s = %q, want exactly \"1\"", gateway.DeferrableHeader, got)
	}

	monitor := resp.Header.Get("Location")
	replay := testwait.Recv(t, app.replays, "the replay")
	id := monitor[strings.LastIndex(monitor, "/")+1:]
	if replay.header.Get(gateway.OperationHeader) != id || replay.header.Get(gateway.DeferrableHeader) != "" {
		t.Errorf("replay's %s = %q, %s = %q; want the operation %q and no deferrable mark",
			gateway.OperationHeader, replay.header.Get(gateway.OperationHeader), gateway.DeferrableHeader, replay.header.Get(gateway.DeferrableHeader), id)
	}
	if replay.method != http.MethodPost || replay.query != "slow=1" || replay.body != string(payload) {
		t.Errorf("replay = %s ?%s with %d bytes, want the POST and its %d bytes byte for byte", replay.method, replay.query, len(replay.body), len(payload))
	}
	progressURL := testwait.Recv(t, app.progressed, "the progress report to be accepted")
	if !strings.HasPrefix(progressURL, progressBase+gateway.DefaultPrefix) {
		t.Errorf("progress URL %q is not under the configured %q", progressURL, progressBase)
	}
	_, statusBody := b.get(t, monitor, "X-User", "alice")
	var doc struct {
		Progress struct {
			Percent int    `json:"percent"`
			Message string `json:"message"`
		} `json:"progress"`
	}
	if err := json.Unmarshal([]byte(statusBody), &doc); err != nil || doc.Progress.Percent != 40 || doc.Progress.Message != "halfway" {
		t.Errorf("status while running = %s (%v), want the reported 40%% halfway", statusBody, err)
	}
	if resp, _ := b.get(t, monitor, "X-User", "bob"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("bob's poll of alice's deferred operation = %d, want 404", resp.StatusCode)
	}

	close(app.release)
	final, finalBody := b.finalResponse(t, monitor, "X-User", "alice")
	if final.StatusCode != http.StatusCreated || finalBody != "made for alice" {
		t.Errorf("final response = %d %q, want the replay's 201", final.StatusCode, finalBody)
	}
	noHandshakeHeaders(t, "the stored response", final)
	late, err := http.Post(progressURL, "application/json", strings.NewReader(`{"percent": 90}`))
	if err != nil {
		t.Fatal(err)
	}
	late.Body.Close()
	if late.StatusCode != http.StatusGone {
		t.Errorf("progress after the attempt ended = %d, want 410", late.StatusCode)
	}

	// The same route, not deferred: passed through as it is.
	quick, quickBody := b.get(t, b.gateway.URL+"/items", "X-User", "alice")
	if quick.StatusCode != http.StatusOK || quickBody != "quick" {
		t.Errorf("GET /items = %d %q, want the application's own answer", quick.StatusCode, quickBody)
	}
	noHandshakeHeaders(t, "a passed-through answer", quick)
}

func TestClientsCannotSendHandshakeHeaders(t *testing.T) {
	t.Parallel()
	app := newDeferringApp()
	b := setup(t, app, gateway.Config{})
	resp, _ := b.get(t, b.gateway.URL+"/items",
		"Asyncreply-Deferrable", "0", "Asyncreply_Progress", "http://attacker.example/", "asyncreply-defer", "1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET = %d", resp.StatusCode)
	}
	got := testwait.Recv(t, app.firstArrivals, "the request")
	for name, values := range got {
		if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(name, "_", "-")), "asyncreply-") && name != gateway.DeferrableHeader {
			t.Errorf("the upstream received the client's %s: %q", name, values)
		}
	}
	if v := got.Values(gateway.DeferrableHeader); len(v) != 1 || v[0] != "1" {
		t.Errorf("%s = %q, want only the gateway's \"1\"", gateway.DeferrableHeader, v)
	}
}

func TestBadDeferrals(t *testing.T) {
	t.Parallel()

	t.Run("a malformed header is a 502 and a log line naming it", func(t *testing.T) {
		t.Parallel()
		app := newDeferringApp()
		app.deferWith = "1; timeout=soon"
		var logs lockedLog
		b := setup(t, app, gateway.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		resp, body := post(t, b, "/items?slow=1", []byte("x"))
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("answer = %d %s, want a 502 problem", resp.StatusCode, body)
		}
		if !strings.Contains(logs.String(), gateway.DeferHeader) {
			t.Errorf("logs do not name %s:\n%s", gateway.DeferHeader, logs.String())
		}
	})

	t.Run("a body over the request limit is 413", func(t *testing.T) {
		t.Parallel()
		b := setup(t, newDeferringApp(), gateway.Config{})
		resp, body := post(t, b, "/items?slow=1", bytes.Repeat([]byte("x"), asyncreply.DefaultMaxRequestBytes+1))
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("answer = %d %s, want 413", resp.StatusCode, body)
		}
	})

	t.Run("a replay the application defers again fails with 502", func(t *testing.T) {
		t.Parallel()
		b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(gateway.DeferHeader, "1")
			w.WriteHeader(http.StatusAccepted)
		}), gateway.Config{})
		resp, _ := post(t, b, "/anything", nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("first arrival = %d, want 202", resp.StatusCode)
		}
		poll := resp.Header.Get("Location")
		for {
			r, body := b.get(t, poll, "Prefer", "wait=10")
			if r.StatusCode == http.StatusAccepted {
				continue
			}
			if r.StatusCode != http.StatusBadGateway {
				t.Errorf("poll = %d %s, want the 502 failure", r.StatusCode, body)
			}
			break
		}
	})
}

// lockedLog is a log destination safe for the gateway's goroutines.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// An application may defer before it has read the body (Puma and the Node
// module read it first; another server may not). The gateway's copy must
// still be the whole body, byte for byte: what the proxy's transport read
// before the deferral, and the rest, read from the client after it.
func TestDeferralBeforeTheBodyIsRead(t *testing.T) {
	t.Parallel()
	replayed := make(chan []byte, 1)
	b := setup(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(gateway.OperationHeader) != "" {
			body, _ := io.ReadAll(r.Body)
			replayed <- body
			return
		}
		w.Header().Set(gateway.DeferHeader, "1")
		w.WriteHeader(http.StatusAccepted) // before reading anything
	}), gateway.Config{})

	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	pr, pw := io.Pipe()
	go func() {
		for chunk := range slices.Chunk(payload, 64<<10) {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, err := http.NewRequest(http.MethodPost, b.gateway.URL+"/upload", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(payload))
	resp, body := b.do(t, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("answer = %d %s, want 202", resp.StatusCode, body)
	}
	if got := testwait.Recv(t, replayed, "the replay"); !bytes.Equal(got, payload) {
		t.Errorf("the replay got %d bytes, want the %d sent, byte for byte", len(got), len(payload))
	}
}
