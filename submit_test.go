package asyncreply_test

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
)

// rawExchange writes request as is on a new connection to b's server and
// reads one response; the connection is closed afterwards.
func rawExchange(t *testing.T, b *bundle, request string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", b.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(waitLimit))
	if _, err := conn.Write([]byte(request)); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// HTTP/1.0 lets a request name no host. Its monitor URLs must still be
// usable: relative, never "http:///operations/…".
func TestSubmitWithoutHost(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(text("done"))))

	resp := rawExchange(t, b, "GET /reports/1 HTTP/1.0\r\n\r\n")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status = %d, want 202", resp.StatusCode)
	}
	for _, name := range []string{"Location", "Operation-Location"} {
		if v := resp.Header.Get(name); !strings.HasPrefix(v, asyncreply.DefaultPrefix) {
			t.Errorf("%s = %q, want a path under %s", name, v, asyncreply.DefaultPrefix)
		}
	}
	if r := b.finish(t, resp.Header.Get("Location")); r.code != http.StatusSeeOther {
		t.Errorf("polling the relative Location = %s, want 303", r)
	}
}

// A body declared over the limit is refused before any of it is read: a
// client that asked Expect: 100-continue is answered 413, never invited to
// send it.
func TestDeclaredBodyOverLimitIsRefusedUnread(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{MaxRequestBytes: 1 << 10}, route("POST /imports", asyncreply.Async(text("imported"))))

	resp := rawExchange(t, b, "POST /imports HTTP/1.1\r\nHost: example\r\nContent-Length: 1048576\r\n"+
		"Expect: 100-continue\r\n\r\n")
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d, want 413 before the body (a 100 Continue would be read here as a status of 100)", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
}

// What meant something to the client's connection to this server only —
// hop-by-hop headers, those Connection names, a proxy's credentials — is
// neither stored nor replayed.
func TestRecordedRequestLeavesOutHopByHopHeaders(t *testing.T) {
	t.Parallel()
	seen := make(chan http.Header, 1)
	b := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			seen <- r.Header.Clone()
		}))))

	resp := rawExchange(t, b, "GET /reports/1 HTTP/1.1\r\nHost: example\r\n"+
		"Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\nConnection: keep-alive, X-Hop\r\nX-Hop: for this hop\r\n"+
		"Keep-Alive: timeout=5\r\nX-Kept: end to end\r\n\r\n")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status = %d, want 202", resp.StatusCode)
	}
	replayed := recv(t, seen, "the replay")
	for _, name := range []string{"Proxy-Authorization", "Connection", "X-Hop", "Keep-Alive"} {
		if v := replayed.Values(name); len(v) > 0 {
			t.Errorf("replay carries %s: %q", name, v)
		}
	}
	if got := replayed.Get("X-Kept"); got != "end to end" {
		t.Errorf("replay's X-Kept = %q, want the end-to-end header kept", got)
	}
}
