package asyncreply_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
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
	replayed := testwait.Recv(t, seen, "the replay")
	for _, name := range []string{"Proxy-Authorization", "Connection", "X-Hop", "Keep-Alive"} {
		if v := replayed.Values(name); len(v) > 0 {
			t.Errorf("replay carries %s: %q", name, v)
		}
	}
	if got := replayed.Get("X-Kept"); got != "end to end" {
		t.Errorf("replay's X-Kept = %q, want the end-to-end header kept", got)
	}
}

func TestSubmit(t *testing.T) {
	t.Parallel()

	t.Run("202 with monitor URL and status document", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))

		r, loc := b.submit(t, http.MethodPost, "/exports", "")

		if !monitorForm.MatchString(loc) {
			t.Errorf("Location = %q, want an absolute %s<id> URL on the server", loc, asyncreply.DefaultPrefix)
		}
		if u, _ := url.Parse(loc); u.Host != strings.TrimPrefix(b.srv.URL, "http://") {
			t.Errorf("Location host = %q, want the request's %q", u.Host, b.srv.URL)
		}
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("Retry-After = %q, want a positive number of seconds", r.header.Get("Retry-After"))
		}
		if !headerHas(r.header, "Vary", "Prefer") {
			t.Errorf("Vary = %q, want it to list Prefer", r.header.Values("Vary"))
		}
		if got := r.header.Get("Preference-Applied"); got != "" {
			t.Errorf("Preference-Applied = %q without Prefer: respond-async, want none", got)
		}

		doc := decodeDoc(t, r)
		top := objectOf(t, r.body)
		checkKeys(t, "running status document", top, "id", "status", "done", "createdAt", "updatedAt", "progress", "links")
		checkKeys(t, "links", objectOf(t, top["links"]), "self", "events")
		if _, ok := objectOf(t, top["progress"])["percent"]; !ok {
			t.Errorf("progress %s has no percent", top["progress"])
		}
		if doc.ID != opID(t, loc) {
			t.Errorf("id = %q, want the Location's %q", doc.ID, opID(t, loc))
		}
		if doc.Status != "NotStarted" && doc.Status != "Running" {
			t.Errorf("status = %q, want NotStarted or Running", doc.Status)
		}
		if doc.Done {
			t.Error("done = true for an operation whose handler is blocked")
		}
		if doc.CreatedAt.IsZero() || doc.UpdatedAt.Before(doc.CreatedAt) {
			t.Errorf("createdAt %v, updatedAt %v: want set, updatedAt not before createdAt", doc.CreatedAt, doc.UpdatedAt)
		}
		if doc.Links.Self != loc || doc.Links.Events != loc+"/events" {
			t.Errorf("links = %+v, want self %q and events %q", doc.Links, loc, loc+"/events")
		}
	})

	// DESIGN lists progress as {"percent", "message"}; only expiresAt, error
	// and links.response are conditional.
	t.Run("progress has percent and message before any report", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("done"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(g)))

		r, loc := b.submit(t, http.MethodPost, "/exports", "")
		testwait.Recv(t, g.started, "the handler to start")
		poll := b.do(t, http.MethodGet, loc, "")

		for _, body := range [][]byte{r.body, poll.body} {
			checkKeys(t, "progress", objectOf(t, objectOf(t, body)["progress"]), "percent", "message")
		}
	})

	t.Run("Preference-Applied answers Prefer respond-async", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("POST /exports", asyncreply.Async(text("done"))))

		r, _ := b.submit(t, http.MethodPost, "/exports", "", "Prefer", "respond-async")

		if got := r.header.Get("Preference-Applied"); got != "respond-async" {
			t.Errorf("Preference-Applied = %q, want respond-async", got)
		}
	})

	t.Run("respond-async overrides Config.Wait", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{Wait: waitLimit}, route("POST /exports", asyncreply.Async(text("done"))))

		start := time.Now()
		b.submit(t, http.MethodPost, "/exports", "", "Prefer", "respond-async")

		if elapsed := time.Since(start); elapsed > waitLimit/2 {
			t.Errorf("202 took %s: Prefer: respond-async must not wait", elapsed)
		}
	})

	t.Run("Retry-After is RetryAfter rounded up to seconds", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{RetryAfter: 1500 * time.Millisecond}, route("POST /exports", asyncreply.Async(text("done"))))

		r, _ := b.submit(t, http.MethodPost, "/exports", "")

		if got := r.header.Get("Retry-After"); got != "2" {
			t.Errorf("Retry-After = %q, want 2 for 1.5s", got)
		}
	})

	t.Run("Idempotency-Key too long is 400", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		b := setup(t, asyncreply.Config{Backend: spy}, route("POST /exports", asyncreply.Async(text("done"))))

		wantProblem(t, b.do(t, http.MethodPost, "/exports", "", "Idempotency-Key", strings.Repeat("k", 256)), http.StatusBadRequest)
		if n := spy.createdCount(); n != 0 {
			t.Errorf("%d operations stored for a rejected request", n)
		}
	})

	t.Run("respond-async on a synchronous endpoint is ignored", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{}, route("GET /ping", text("pong")))

		r := b.do(t, http.MethodGet, "/ping", "", "Prefer", "respond-async")

		if r.code != http.StatusOK || string(r.body) != "pong" {
			t.Errorf("GET /ping with Prefer: respond-async = %s, want 200 pong", r)
		}
		if r.header.Get("Preference-Applied") != "" || r.header.Get("Location") != "" {
			t.Errorf("synchronous answer has Preference-Applied %q, Location %q; want neither",
				r.header.Get("Preference-Applied"), r.header.Get("Location"))
		}
	})
}

func TestOwner(t *testing.T) {
	t.Parallel()

	t.Run("someone else's operation is an unknown one", func(t *testing.T) {
		t.Parallel()
		g := newGate(text("for alice"))
		defer g.release.fire()
		b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("POST /exports", asyncreply.Async(g)))
		_, loc := b.submit(t, http.MethodPost, "/exports", "", "X-User", "alice")
		testwait.Recv(t, g.started, "the handler to start")

		unknown := b.do(t, http.MethodGet, "/operations/AAAAAAAAAAAAAAAAAAAAAA", "", "X-User", "bob")
		wantProblem(t, unknown, http.StatusNotFound)
		for _, tc := range []struct{ method, target string }{
			{http.MethodGet, loc}, {http.MethodHead, loc}, {http.MethodGet, loc + "/response"},
			{http.MethodGet, loc + "/events"}, {http.MethodDelete, loc}, {http.MethodGet, loc},
		} {
			r := b.do(t, tc.method, tc.target, "", "X-User", "bob")
			if r.code != http.StatusNotFound || r.header.Get("Content-Type") != unknown.header.Get("Content-Type") {
				t.Errorf("bob's %s %s = %s, want 404 like an unknown ID", tc.method, tc.target, r)
			}
			if tc.method != http.MethodHead && !bytes.Equal(r.body, unknown.body) {
				t.Errorf("bob's %s %s body = %s, want an unknown ID's %s", tc.method, tc.target, r.body, unknown.body)
			}
		}

		if r := b.do(t, http.MethodGet, loc, "", "X-User", "alice"); r.code != http.StatusAccepted {
			t.Fatalf("alice's poll after bob's DELETE = %s, want 202: bob must not cancel it", r)
		}
		g.release.fire()
		if r := b.finish(t, loc, "X-User", "alice"); r.code != http.StatusSeeOther {
			t.Fatalf("alice's poll = %s, want 303", r)
		}
		if r := b.do(t, http.MethodGet, loc+"/response", "", "X-User", "bob"); r.code != http.StatusNotFound {
			t.Errorf("bob's GET response = %s, want 404", r)
		}
		if r := b.do(t, http.MethodGet, loc+"/response", "", "X-User", "alice"); r.code != http.StatusOK || string(r.body) != "for alice" {
			t.Errorf("alice's GET response = %s, want 200 for alice", r)
		}
	})

	t.Run("no principal is 403 at submit and 404 at poll", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		b := setup(t, asyncreply.Config{Backend: spy, Owner: userFromHeader}, route("POST /exports", asyncreply.Async(text("done"))))

		wantProblem(t, b.do(t, http.MethodPost, "/exports", ""), http.StatusForbidden)
		if n := spy.createdCount(); n != 0 {
			t.Errorf("%d operations stored without a principal", n)
		}
		_, loc := b.submit(t, http.MethodPost, "/exports", "", "X-User", "alice")
		wantProblem(t, b.do(t, http.MethodGet, loc, ""), http.StatusNotFound)
	})
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()

	t.Run("a retry returns the same operation", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		var runs atomic.Int32
		g := newGate(func(w http.ResponseWriter, r *http.Request) {
			runs.Add(1)
			io.Copy(w, r.Body)
		})
		defer g.release.fire()
		b := setup(t, asyncreply.Config{Backend: spy, Owner: userFromHeader}, route("POST /payments", asyncreply.Async(g)))
		key := []string{"Idempotency-Key", "3f1c8a2e-pay-1", "X-User", "alice"}

		_, first := b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, key...)
		testwait.Recv(t, g.started, "the handler to start")
		_, retry := b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, key...)
		if retry != first {
			t.Errorf("retry Location = %q, want the first's %q", retry, first)
		}
		g.release.fire()
		if r := b.finish(t, first, "X-User", "alice"); r.code != http.StatusSeeOther {
			t.Fatalf("poll = %s, want 303", r)
		}
		_, late := b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, key...)
		if late != first {
			t.Errorf("retry after completion Location = %q, want the first's %q", late, first)
		}
		if r := b.do(t, http.MethodGet, late+"/response", "", "X-User", "alice"); string(r.body) != `{"amount":10}` {
			t.Errorf("response = %s, want the echoed body", r)
		}
		if n := spy.createdCount(); n != 1 {
			t.Errorf("%d operations created, want 1", n)
		}
		if n := runs.Load(); n != 1 {
			t.Errorf("handler ran %d times, want once", n)
		}
	})

	t.Run("the same key for another request is 422", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		b := setup(t, asyncreply.Config{Backend: spy}, route("POST /payments", asyncreply.Async(text("paid"))))

		b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, "Idempotency-Key", "k-1")
		wantProblem(t, b.do(t, http.MethodPost, "/payments", `{"amount":99}`, "Idempotency-Key", "k-1"), http.StatusUnprocessableEntity)
		if n := spy.createdCount(); n != 1 {
			t.Errorf("%d operations created, want 1", n)
		}
	})

	t.Run("without an owner, the same key from other credentials is another operation", func(t *testing.T) {
		t.Parallel()
		spy := newSpy()
		b := setup(t, asyncreply.Config{Backend: spy}, route("POST /login", asyncreply.Async(http.HandlerFunc(
			func(w http.ResponseWriter, r *http.Request) {
				// The answer carries the caller's own session: handing it to
				// anyone else who guesses the key would be a takeover.
				http.SetCookie(w, &http.Cookie{Name: "session", Value: "of-" + r.Header.Get("Authorization")})
				io.WriteString(w, "welcome")
			}))))

		alice := []string{"Idempotency-Key", "k-1", "Authorization", "Bearer alice", "Cookie", "theme=dark"}
		_, first := b.submit(t, http.MethodPost, "/login", `{}`, alice...)
		_, mallory := b.submit(t, http.MethodPost, "/login", `{}`, "Idempotency-Key", "k-1", "Authorization", "Bearer mallory")
		if mallory == first {
			t.Fatalf("a client with other credentials was handed operation %q of the first", first)
		}
		if r := b.finish(t, mallory); r.code != http.StatusSeeOther {
			t.Fatalf("mallory's poll = %s, want 303", r)
		}
		if r := b.do(t, http.MethodGet, mallory+"/response", ""); strings.Contains(r.header.Get("Set-Cookie"), "alice") {
			t.Errorf("mallory's response sets %q", r.header.Get("Set-Cookie"))
		}
		_, retry := b.submit(t, http.MethodPost, "/login", `{}`, alice...)
		if retry != first {
			t.Errorf("the first client's retry got %q, want its operation %q", retry, first)
		}
		if n := spy.createdCount(); n != 2 {
			t.Errorf("%d operations created, want 2", n)
		}
	})

	t.Run("the same key from another owner is another operation", func(t *testing.T) {
		t.Parallel()
		b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("POST /payments", asyncreply.Async(text("paid"))))

		_, alice := b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, "Idempotency-Key", "k-1", "X-User", "alice")
		_, bob := b.submit(t, http.MethodPost, "/payments", `{"amount":10}`, "Idempotency-Key", "k-1", "X-User", "bob")
		if alice == bob {
			t.Errorf("alice and bob share operation %q", alice)
		}
		if r := b.finish(t, bob, "X-User", "bob"); r.code != http.StatusSeeOther {
			t.Errorf("bob's poll = %s, want 303", r)
		}
	})
}

func TestInline(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	var replayID atomic.Value
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := asyncreply.OperationID(r.Context())
		replayID.Store(id)
		runs.Add(1)
		w.Header().Set("X-Mode", "inline")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "made inline")
	})
	b := setup(t, asyncreply.Config{Inline: true}, route("POST /things", asyncreply.Async(handler)))

	// Already finished when answered: a redirect to the response, as its
	// first poll would answer, rather than a 202 that makes a polite client
	// wait Retry-After for nothing.
	r := b.do(t, http.MethodPost, "/things", "")
	if runs.Load() != 1 {
		t.Fatalf("handler ran %d times before the answer, want 1", runs.Load())
	}
	if r.code != http.StatusSeeOther {
		t.Fatalf("POST /things = %s, want 303", r)
	}
	doc := decodeDoc(t, r)
	loc := doc.Links.Self
	if !monitorForm.MatchString(loc) || replayID.Load() != doc.ID || opID(t, loc) != doc.ID {
		t.Errorf("links.self %q, handler's OperationID %q, document id %q: want the asynchronous mode's monitor URL of one operation", loc, replayID.Load(), doc.ID)
	}
	if got := r.header.Get("Location"); got != loc+"/response" {
		t.Errorf("303 Location = %q, want %q", got, loc+"/response")
	}
	if got := r.header.Get("Operation-Location"); got != loc+"/status" {
		t.Errorf("Operation-Location = %q, want %q", got, loc+"/status")
	}
	resp := b.do(t, http.MethodGet, r.header.Get("Location"), "")
	if resp.code != http.StatusCreated || string(resp.body) != "made inline" || resp.header.Get("X-Mode") != "inline" {
		t.Errorf("response = %s, want the handler's 201", resp)
	}

	// Prefer: respond-async still gets the 202 of the asynchronous mode.
	r, loc = b.submit(t, http.MethodPost, "/things", "", "Prefer", "respond-async")
	if runs.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2", runs.Load())
	}
	if !monitorForm.MatchString(loc) || r.header.Get("Retry-After") == "" || !headerHas(r.header, "Vary", "Prefer") {
		t.Errorf("202 Location %q, headers %v: want the asynchronous mode's", loc, r.header)
	}
	if first := b.do(t, http.MethodGet, loc, ""); first.code != http.StatusSeeOther || first.header.Get("Location") != loc+"/response" {
		t.Errorf("first poll = %s, want 303 to the response", first)
	}

	// A failure is answered as its poll would be: the status a synchronous
	// caller would have seen.
	failing := setup(t, asyncreply.Config{Inline: true}, route("GET /boom", asyncreply.Async(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	}))))
	if r := failing.do(t, http.MethodGet, "/boom", ""); r.code != http.StatusInternalServerError || r.header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("GET /boom = %s, want the 500 problem", r)
	}
}
