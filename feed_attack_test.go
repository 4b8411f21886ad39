package asyncreply_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
)

// A feed asked to start long ago — ?since= before 1970, or beyond what a
// cursor's nanoseconds hold, or a cursor at the epoch — starts from the
// caller's oldest change, as any start before it does: it neither ends at
// once (the start made into a cursor the store refuses) nor silently skips
// the history (a time that wrapped around into the future).
func TestFeedFromLongAgoStartsAtTheOldestChange(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
	alice := []string{"X-User", "alice"}
	_, mine := b.submit(t, http.MethodGet, "/reports/1", "", alice...)
	b.finish(t, mine, alice...)
	epoch := backend.ChangeCursor{UpdatedAt: time.Unix(0, 0), ID: "x"}.String()
	for _, start := range [][]string{
		{"?since=0001-01-02T00:00:00Z"},
		{"?since=1000-01-01T00:00:00Z"},
		{"?since=1960-01-01T00:00:00Z"},
		{"?after=" + epoch},
		{"", "Last-Event-ID", epoch},
	} {
		feed := b.openFeedAt(t, start[0], append(alice, start[1:]...)...)
		if ev, _ := feed.nextStatus(t); selfOf(t, ev) != mine {
			t.Errorf("feed %q starts with %s, want the caller's first operation", start, selfOf(t, ev))
		}
		feed.resp.Body.Close()
	}
}

// Resuming with another owner's cursor — an id from another user's feed,
// whose operation it names — shows nothing of theirs: a cursor is a
// position, and the feed is the caller's, over a stream or a socket.
func TestFeedResumedWithAnotherOwnersCursorShowsOnlyTheCallers(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
	alice, bob := []string{"X-User", "alice"}, []string{"X-User", "bob"}
	before := b.openFeedAt(t, "?since="+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano), bob...)
	_, his := b.submit(t, http.MethodGet, "/reports/1", "", bob...)
	events := untilDone(t, before, his)
	first := events[0].id
	before.resp.Body.Close()

	_, mine := b.submit(t, http.MethodGet, "/reports/2", "", alice...)
	b.finish(t, mine, alice...)
	for _, header := range [][]string{{"Last-Event-ID", first}} {
		feed := b.openFeed(t, append(alice, header...)...)
		for _, ev := range untilDone(t, feed, mine) {
			if selfOf(t, ev) != mine {
				t.Errorf("alice's feed resumed at bob's cursor shows %s", selfOf(t, ev))
			}
		}
		feed.resp.Body.Close()
	}
	conn, _, err := b.dialFeed(t, "", http.Header{"X-User": {"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Write(t.Context(), websocket.MessageText, []byte(`{"resume":"`+first+`"}`)); err != nil {
		t.Fatal(err)
	}
	for msg := (socketMessage{}); !(msg.Operation.Done && msg.Operation.Links.Self == mine); {
		if msg = readMessage(t, conn); msg.Operation.Links.Self != mine {
			t.Fatalf("alice's socket resumed at bob's cursor shows %s", msg.Operation.Links.Self)
		}
	}
}

// A socket's first message past the read limit, or not JSON, or a resume
// that is not a cursor, closes the socket with a status that says why,
// and leaves the server serving.
func TestFeedSocketRefusesHostileFirstMessages(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, http.NotFoundHandler())
	for _, c := range []struct {
		name    string
		message string
		want    websocket.StatusCode
	}{
		{"oversized", `{"resume":"` + strings.Repeat("a", 1<<20) + `"}`, websocket.StatusMessageTooBig},
		{"not JSON", "\x00\xff<html>", websocket.StatusPolicyViolation},
		{"not a cursor", `{"resume":"../../etc/passwd"}`, websocket.StatusPolicyViolation},
		{"a negative cursor", `{"resume":"-1.x"}`, websocket.StatusPolicyViolation},
	} {
		conn, _, err := b.dialFeed(t, "", http.Header{"X-User": {"alice"}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		conn.Write(ctx, websocket.MessageText, []byte(c.message)) // may fail once the server closes
		_, _, err = conn.Read(ctx)
		cancel()
		if got := websocket.CloseStatus(err); got != c.want {
			t.Errorf("%s first message: read = %v (close status %d), want %d", c.name, err, got, c.want)
		}
	}
	if r := b.do(t, http.MethodGet, asyncreply.DefaultPrefix, "", "X-User", "alice"); r.code != http.StatusOK {
		t.Errorf("after the hostile sockets, the list = %s, want 200", r)
	}
}

// Feeds from many owners, over streams and sockets alike, fill
// Config.MaxWatches and no more: the next owner's feed, of either kind, is
// 503 with Retry-After, while polls go on answering; every feed still gets
// its own owner's changes, and none another's.
func TestFeedsOfManyOwnersFillMaxWatches(t *testing.T) {
	t.Parallel()
	const owners = 300
	b := setup(t, asyncreply.Config{Owner: userFromHeader, MaxWatches: owners}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
	streams := make([]*sseStream, 0, owners/2)
	for i := range owners {
		user := "user" + strconv.Itoa(i)
		if i%2 == 0 {
			streams = append(streams, b.openFeed(t, "X-User", user))
		} else if _, _, err := b.dialFeed(t, "?since="+time.Now().UTC().Format(time.RFC3339Nano), http.Header{"X-User": {user}}); err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
	}
	r := b.do(t, http.MethodGet, feedPath, "", "X-User", "one-too-many")
	wantProblem(t, r, http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if _, resp, err := b.dialFeed(t, "", http.Header{"X-User": {"one-too-many"}}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a socket past MaxWatches: %v, want 503", err)
	}
	if r := b.do(t, http.MethodGet, asyncreply.DefaultPrefix, "", "X-User", "one-too-many"); r.code != http.StatusOK {
		t.Errorf("the list with every watch taken = %s, want 200", r)
	}

	// A change of one owner reaches that owner's feed alone.
	_, mine := b.submit(t, http.MethodGet, "/reports/1", "", "X-User", "user0")
	for _, ev := range untilDone(t, streams[0], mine) {
		if selfOf(t, ev) != mine {
			t.Errorf("user0's feed shows %s", selfOf(t, ev))
		}
	}
	_, theirs := b.submit(t, http.MethodGet, "/reports/2", "", "X-User", "user2")
	for _, ev := range untilDone(t, streams[1], theirs) {
		if selfOf(t, ev) != theirs {
			t.Errorf("user2's feed shows %s", selfOf(t, ev))
		}
	}
}

// A page that hides its origin — a sandboxed frame or a file, whose Origin
// is "null" — or names the server's host under another scheme or port, or
// as a suffix, may not open the socket with the user's credentials; only
// a page of the server's own origin, or a client outside a browser (no
// Origin), may.
func TestFeedSocketRefusesSpoofedOrigins(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, http.NotFoundHandler())
	host := strings.TrimPrefix(b.srv.URL, "http://")
	hostname, _, _ := strings.Cut(host, ":")
	for _, origin := range []string{
		"null",
		"http://" + hostname + ":1",
		"http://" + host + ".evil.example",
		"http://evil.example",
		"http://evil" + host,
		"file://",
		"http://" + hostname,
	} {
		if _, resp, err := b.dialFeed(t, "?since=2000-01-01T00:00:00Z", http.Header{"X-User": {"alice"}, "Origin": {origin}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("a socket from Origin %q: %v, want 403", origin, err)
		}
	}
	for _, origin := range []string{"", b.srv.URL} {
		header := http.Header{"X-User": {"alice"}}
		if origin != "" {
			header.Set("Origin", origin)
		}
		conn, _, err := b.dialFeed(t, "?since=2000-01-01T00:00:00Z", header)
		if err != nil {
			t.Errorf("a socket from Origin %q: %v, want it open", origin, err)
			continue
		}
		conn.CloseNow()
	}
}
