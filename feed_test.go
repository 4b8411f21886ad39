package asyncreply_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/backend/sqlite"
)

const feedPath = asyncreply.DefaultPrefix + "events"

// openFeed opens the all-operations feed as Server-Sent Events.
func (b *bundle) openFeed(t *testing.T, header ...string) *sseStream {
	t.Helper()
	return b.openFeedAt(t, "", header...)
}

// openFeedAt opens the feed with a query string.
func (b *bundle) openFeedAt(t *testing.T, query string, header ...string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	req := b.request(t, http.MethodGet, feedPath+query, "", header...).WithContext(ctx)
	resp, err := b.client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", feedPath+query, err)
	}
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s = %d %s, want 200 text/event-stream", feedPath+query, resp.StatusCode, body)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	return &sseStream{resp: resp, sc: sc}
}

// untilDone reads a feed until the operation at monitor is done, and
// returns the events read.
func untilDone(t *testing.T, s *sseStream, monitor string) []sseEvent {
	t.Helper()
	var events []sseEvent
	for {
		ev, doc := s.nextStatus(t)
		if ev.id == "" {
			t.Fatalf("feed event without an id: %+v", ev)
		}
		events = append(events, ev)
		if doc.Links.Self == monitor && doc.Done {
			return events
		}
	}
}

func selfOf(t *testing.T, ev sseEvent) string {
	t.Helper()
	return decodeDocBytes(t, []byte(ev.data)).Links.Self
}

func TestFeedStreamsOnlyTheCallersChanges(t *testing.T) {
	t.Parallel()
	g := newGate(text("done"))
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("GET /reports/{id}", asyncreply.Async(g)))
	alice, bob := []string{"X-User", "alice"}, []string{"X-User", "bob"}
	alices := b.openFeed(t, alice...)
	bobs := b.openFeed(t, bob...)

	_, mine := b.submit(t, http.MethodGet, "/reports/1", "", alice...)
	g.release.fire()
	events := untilDone(t, alices, mine)
	for _, ev := range events {
		if self := selfOf(t, ev); self != mine {
			t.Errorf("alice's feed shows %s, not her operation %s", self, mine)
		}
	}
	last := decodeDocBytes(t, []byte(events[len(events)-1].data))
	if last.Status != "Succeeded" || last.ResourceLocation == "" || !strings.HasPrefix(last.Links.Self, "http") {
		t.Errorf("last event = %+v, want Succeeded with absolute links", last)
	}

	// Bob's feed shows his operation and nothing of alice's before it.
	_, his := b.submit(t, http.MethodGet, "/reports/2", "", bob...)
	for _, ev := range untilDone(t, bobs, his) {
		if self := selfOf(t, ev); self != his {
			t.Errorf("bob's feed shows %s, not his operation %s", self, his)
		}
	}

	// A cancel is a change too.
	if r := b.do(t, http.MethodDelete, mine, "", alice...); r.code != http.StatusNoContent && r.code != http.StatusOK {
		t.Fatalf("DELETE = %s", r)
	}
	if ev, doc := alices.nextStatus(t); doc.Status != "Canceled" || doc.ID != opID(t, mine) {
		t.Errorf("after the cancel, alice's feed shows %+v (%s), want her operation Canceled", doc, ev.id)
	}
}

func TestFeedResumesAfterLastEventID(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
	alice := []string{"X-User", "alice"}
	first := b.openFeed(t, alice...)
	_, one := b.submit(t, http.MethodGet, "/reports/1", "", alice...)
	seen := untilDone(t, first, one)
	first.resp.Body.Close()

	// Changes while the client is away are sent on its return.
	_, two := b.submit(t, http.MethodGet, "/reports/2", "", alice...)
	b.finish(t, two, alice...)
	resumed := b.openFeed(t, append(alice, "Last-Event-ID", seen[len(seen)-1].id)...)
	for _, ev := range untilDone(t, resumed, two) {
		if ev.id == seen[len(seen)-1].id {
			t.Errorf("the resumed feed sent again the event the client named: %s", ev.id)
		}
	}

	// ?since= starts with what changed since then.
	r := b.do(t, http.MethodGet, feedPath+"?since=yesterday", "", alice...)
	wantProblem(t, r, http.StatusBadRequest)
	r = b.do(t, http.MethodGet, feedPath, "", append(alice, "Last-Event-ID", "not a cursor")...)
	wantProblem(t, r, http.StatusBadRequest)
	fromStart := b.openFeedAt(t, "?since="+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), alice...)
	got := map[string]bool{}
	for len(got) < 2 {
		_, doc := fromStart.nextStatus(t)
		got[doc.Links.Self] = true
	}
	if !got[one] || !got[two] {
		t.Errorf("?since= an hour ago sent %v, want both operations", got)
	}
}

func TestFeedNeedsOwnersAChangeListerAndCredentials(t *testing.T) {
	t.Parallel()
	unowned := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
	wantProblem(t, unowned.do(t, http.MethodGet, feedPath, ""), http.StatusNotFound)
	owned := setup(t, asyncreply.Config{Owner: userFromHeader}, http.NotFoundHandler())
	wantProblem(t, owned.do(t, http.MethodGet, feedPath, ""), http.StatusNotFound)
	if r := owned.do(t, http.MethodPost, feedPath, "", "X-User", "alice"); r.code != http.StatusMethodNotAllowed {
		t.Errorf("POST of the feed = %s, want 405", r)
	}
	hidden := setup(t, asyncreply.Config{Owner: userFromHeader, Backend: storeOnly{memory.New(memory.Config{})}}, http.NotFoundHandler())
	wantProblem(t, hidden.do(t, http.MethodGet, feedPath, "", "X-User", "alice"), http.StatusNotImplemented)
}

func TestFeedCountsAgainstTheWatchCaps(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{Owner: userFromHeader, MaxWatchesPerOwner: 1}, http.NotFoundHandler())
	b.openFeed(t, "X-User", "alice")
	r := b.do(t, http.MethodGet, feedPath, "", "X-User", "alice")
	wantProblem(t, r, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// A socket is counted the same.
	if _, resp, err := b.dialFeed(t, "", http.Header{"X-User": {"alice"}}); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a socket past the owner's bound: %v, want 429", err)
	}
	b.openFeed(t, "X-User", "bob") // another owner's bound is its own
	if _, resp, err := b.dialFeed(t, "", http.Header{"X-User": {"bob"}}); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("bob's socket past his bound: %v, want 429", err)
	}
}

// A change whose UpdatedAt is earlier than one the poller already read —
// its transaction committed late, or its process's clock is behind — is
// still delivered; and changes made through another Middleware on the
// same store, which does not wake this one's poller, arrive too.
func TestFeedDeliversChangesThatCommitLate(t *testing.T) {
	t.Parallel()
	store := memory.New(memory.Config{})
	b := setup(t, asyncreply.Config{Owner: userFromHeader, Backend: store}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
	alice := []string{"X-User", "alice"}
	feed := b.openFeed(t, alice...)
	_, first := b.submit(t, http.MethodGet, "/reports/1", "", alice...)
	untilDone(t, feed, first)
	_, second := b.submit(t, http.MethodGet, "/reports/2", "", alice...)
	untilDone(t, feed, second)
	// Cancels straight on the store, with the times they were given: the
	// first a second ahead, read by the poller; then the second, half a
	// second before it, as if its transaction had committed late.
	at := time.Now().Add(time.Second).Truncate(time.Microsecond)
	if err := store.Cancel(t.Context(), opID(t, first), at); err != nil {
		t.Fatal(err)
	}
	waitFor(t, feed, opID(t, first), "Canceled")
	if err := store.Cancel(t.Context(), opID(t, second), at.Add(-500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, feed, opID(t, second), "Canceled")
}

// waitFor reads the feed until an event of operation id in status.
func waitFor(t *testing.T, s *sseStream, id, status string) {
	t.Helper()
	for {
		if _, doc := s.nextStatus(t); doc.ID == id && doc.Status == status {
			return
		}
	}
}

func TestFeedEndsOnShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, http.NotFoundHandler())
	feed := b.openFeed(t, "X-User", "alice")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := b.shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	feed.wantEnd(t)
}

// dialFeed opens the feed over a WebSocket.
func (b *bundle) dialFeed(t *testing.T, query string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(b.srv.URL, "http")+feedPath+query, &websocket.DialOptions{HTTPHeader: header})
	if err == nil {
		t.Cleanup(func() { conn.CloseNow() })
	}
	return conn, resp, err
}

type socketMessage struct {
	ID        string    `json:"id"`
	Operation statusDoc `json:"operation"`
}

func readMessage(t *testing.T, conn *websocket.Conn) socketMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	typ, data, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("reading the socket: %v", err)
	}
	var msg socketMessage
	if typ != websocket.MessageText || json.Unmarshal(data, &msg) != nil || msg.ID == "" {
		t.Fatalf("socket message %s, want {\"id\", \"operation\"} as text", data)
	}
	return msg
}

func TestFeedOverAWebSocket(t *testing.T) {
	t.Parallel()
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
	alice, bob := http.Header{"X-User": {"alice"}}, http.Header{"X-User": {"bob"}}
	conn, _, err := b.dialFeed(t, "", alice)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Write(t.Context(), websocket.MessageText, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	bobs, _, err := b.dialFeed(t, "", bob)
	if err != nil {
		t.Fatal(err)
	}
	_, mine := b.submit(t, http.MethodGet, "/reports/1", "", "X-User", "alice")
	var last socketMessage
	for !last.Operation.Done {
		last = readMessage(t, conn)
		if last.Operation.Links.Self != mine {
			t.Fatalf("alice's socket shows %s", last.Operation.Links.Self)
		}
	}
	_, his := b.submit(t, http.MethodGet, "/reports/2", "", "X-User", "bob")
	for msg := (socketMessage{}); !msg.Operation.Done; {
		if msg = readMessage(t, bobs); msg.Operation.Links.Self != his {
			t.Fatalf("bob's socket shows %s, not his %s", msg.Operation.Links.Self, his)
		}
	}

	// Resuming with ?after= and with {"resume"}: what changed meanwhile.
	_, two := b.submit(t, http.MethodGet, "/reports/3", "", "X-User", "alice")
	b.finish(t, two, "X-User", "alice")
	for _, resume := range []func() *websocket.Conn{
		func() *websocket.Conn {
			c, _, err := b.dialFeed(t, "?after="+last.ID, alice)
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		func() *websocket.Conn {
			c, _, err := b.dialFeed(t, "", alice)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Write(t.Context(), websocket.MessageText, []byte(`{"resume":"`+last.ID+`"}`)); err != nil {
				t.Fatal(err)
			}
			return c
		},
	} {
		c := resume()
		for msg := (socketMessage{}); msg.Operation.Links.Self != two || !msg.Operation.Done; {
			msg = readMessage(t, c)
			if msg.ID == last.ID {
				t.Errorf("the resumed socket sent again the change the client named")
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
	}

	// Another site's page may not open it with the user's cookies.
	if _, resp, err := b.dialFeed(t, "", http.Header{"X-User": {"alice"}, "Origin": {"https://elsewhere.example"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin dial: %v, want 403", err)
	}
	// The same rules as the stream's.
	if _, resp, err := b.dialFeed(t, "", nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("dial without credentials: %v, want 404", err)
	}

	// Shutdown closes it with 1001.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := b.shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for err == nil { // alice's changes since, then the close
		_, _, err = conn.Read(ctx)
	}
	if status := websocket.CloseStatus(err); status != websocket.StatusGoingAway {
		var ce websocket.CloseError
		t.Errorf("after Shutdown, read = %v (close status %d, %v), want 1001", err, status, errors.As(err, &ce))
	}
}

// Two Middlewares on one SQLite file, as two processes: the feed of one
// shows what the other accepted and ran, which only its poller can learn.
func TestFeedAcrossProcessesOnSQLite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "asyncreply.db")
	open := func() backend.Backend {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		be, err := sqlite.New(ctx, sqlite.Config{Path: path, Logger: discardLogger})
		if err != nil {
			t.Fatalf("sqlite.New: %v", err)
		}
		return be // stopped by its Middleware's Shutdown
	}
	writer := setup(t, asyncreply.Config{Backend: open(), Owner: userFromHeader}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
	reader := setup(t, asyncreply.Config{Backend: open(), Owner: userFromHeader, AcceptOnly: true}, http.NotFoundHandler())
	feed := reader.openFeed(t, "X-User", "alice")
	others := reader.openFeed(t, "X-User", "bob")
	_, monitor := writer.submit(t, http.MethodGet, "/reports/1", "", "X-User", "alice")
	id := opID(t, monitor)
	waitFor(t, feed, id, "Succeeded")
	_, his := writer.submit(t, http.MethodGet, "/reports/2", "", "X-User", "bob")
	for {
		_, doc := others.nextStatus(t)
		if doc.ID == id {
			t.Fatalf("bob's feed shows alice's operation")
		}
		if doc.ID == opID(t, his) && doc.Done {
			break
		}
	}
}
