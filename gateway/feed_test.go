package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/asyncreply/asyncreply/gateway"
)

// feedWait bounds every read of a feed here, so that a bug fails the test
// rather than hanging it.
const feedWait = 10 * time.Second

// change is what the tests read of one feed event: the operation's monitor
// URL and whether it is done.
type change struct {
	Self string
	Done bool
}

type changeDoc struct {
	Done  bool `json:"done"`
	Links struct {
		Self string `json:"self"`
	} `json:"links"`
}

// feedReader reads the changes of a feed, whatever carries it.
type feedReader func(t *testing.T) change

// openSSEFeed opens GET <prefix>events as who and returns its reader.
func (b *bundle) openSSEFeed(t *testing.T, prefix string, who as) feedReader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), feedWait)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, prefix+"events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if who != nil {
		who(req)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %sevents: %d, want 200", prefix, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	return func(t *testing.T) change {
		t.Helper()
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var doc changeDoc
				if err := json.Unmarshal([]byte(data), &doc); err != nil {
					t.Fatalf("feed event %s: %v", data, err)
				}
				return change{Self: doc.Links.Self, Done: doc.Done}
			}
		}
		t.Fatalf("the feed ended: %v", sc.Err())
		return change{}
	}
}

// dialSocketFeed opens the feed over a WebSocket as who, or returns the
// status of the refused handshake.
func (b *bundle) dialSocketFeed(t *testing.T, prefix string, who as) (feedReader, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), feedWait)
	t.Cleanup(cancel)
	req, _ := http.NewRequest(http.MethodGet, prefix, nil)
	if who != nil {
		who(req)
	}
	req.Header.Del("Host")
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(prefix, "http")+"events", &websocket.DialOptions{HTTPHeader: req.Header})
	if err != nil {
		if resp == nil {
			t.Fatal(err)
		}
		return nil, resp.StatusCode
	}
	t.Cleanup(func() { conn.CloseNow() })
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	return func(t *testing.T) change {
		t.Helper()
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("reading the socket: %v", err)
		}
		var msg struct {
			Operation changeDoc `json:"operation"`
		}
		if err := json.Unmarshal(data, &msg); err != nil {
			t.Fatalf("socket message %s: %v", data, err)
		}
		return change{Self: msg.Operation.Links.Self, Done: msg.Operation.Done}
	}, http.StatusSwitchingProtocols
}

// readUntilDone reads a feed until the operation at monitor is done, and
// fails on a change of any operation in foreign.
func readUntilDone(t *testing.T, read feedReader, monitor string, foreign ...string) {
	t.Helper()
	for {
		c := read(t)
		for _, f := range foreign {
			if c.Self == f {
				t.Fatalf("the feed shows another caller's operation %s", f)
			}
		}
		if c.Self == monitor && c.Done {
			return
		}
	}
}

// listOf returns the monitor URLs GET <prefix> lists for who, and the
// status of the answer.
func (b *bundle) listOf(t *testing.T, prefix string, who as) ([]string, int) {
	t.Helper()
	resp, body := b.send(t, http.MethodGet, prefix, who)
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode
	}
	var doc struct {
		Operations []changeDoc `json:"operations"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	var selves []string
	for _, op := range doc.Operations {
		selves = append(selves, op.Links.Self)
	}
	return selves, resp.StatusCode
}

// In every owner mode, the list, the feed and the socket show a caller its
// own operations and none of another's.
func TestListAndFeedShowOnlyTheCallersOperations(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode       gateway.Owner
		alice, bob as
	}{
		{gateway.OwnerHeader("X-Token"), withHeader("X-Token", "tok-a"), withHeader("X-Token", "tok-b")},
		{gateway.OwnerCookie("session"), withCookie("session", "a1"), withCookie("session", "b1")},
		{gateway.OwnerUpstream("/whoami"), withCookie("session", "a1"), withCookie("session", "b1")},
		{gateway.OwnerIssuedCookie(), withCookie(gateway.OwnerCookieName, "AAAAAAAAAAAAAAAAAAAAAA"), withCookie(gateway.OwnerCookieName, "BBBBBBBBBBBBBBBBBBBBBB")},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			t.Parallel()
			b := setup(t, newWhoUpstream(), gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}, Owner: tc.mode})
			probe, _ := b.submit(t, tc.alice)
			prefix := probe[:strings.LastIndex(probe, "/")+1]
			b.resultAs(t, probe, tc.alice)

			alicesFeed := b.openSSEFeed(t, prefix, tc.alice)
			bobsFeed := b.openSSEFeed(t, prefix, tc.bob)
			alicesSocket, _ := b.dialSocketFeed(t, prefix, tc.alice)
			bobsSocket, _ := b.dialSocketFeed(t, prefix, tc.bob)

			hers, _ := b.submit(t, tc.alice)
			b.resultAs(t, hers, tc.alice)
			his, _ := b.submit(t, tc.bob)
			b.resultAs(t, his, tc.bob)

			readUntilDone(t, alicesFeed, hers, his)
			readUntilDone(t, alicesSocket, hers, his)
			readUntilDone(t, bobsFeed, his, hers, probe)
			readUntilDone(t, bobsSocket, his, hers, probe)

			alices, code := b.listOf(t, prefix, tc.alice)
			if code != http.StatusOK || len(alices) != 2 || alices[0] != hers || alices[1] != probe {
				t.Errorf("alice's list: %d %q, want her two operations", code, alices)
			}
			bobs, code := b.listOf(t, prefix, tc.bob)
			if code != http.StatusOK || len(bobs) != 1 || bobs[0] != his {
				t.Errorf("bob's list: %d %q, want his one operation", code, bobs)
			}
		})
	}
}

// Without an owner, there is no "own": the list, the feed and the socket
// are the 404 of an unknown monitor URL, never everyone's operations.
func TestWithoutOwnerListAndFeedAreNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t, newWhoUpstream(), gateway.Config{Async: []gateway.Route{{Pattern: "GET /report"}}})
	monitor, _ := b.submit(t, withCookie("session", "a1"))
	prefix := monitor[:strings.LastIndex(monitor, "/")+1]
	if _, code := b.listOf(t, prefix, nil); code != http.StatusNotFound {
		t.Errorf("list without owners: %d, want 404", code)
	}
	if resp, body := b.send(t, http.MethodGet, prefix+"events", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("feed without owners: %d %s, want 404", resp.StatusCode, body)
	}
	if _, code := b.dialSocketFeed(t, prefix, nil); code != http.StatusNotFound {
		t.Errorf("socket without owners: %d, want 404", code)
	}
}
