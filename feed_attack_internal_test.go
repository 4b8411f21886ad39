package asyncreply

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// A feed whose client stops reading, with the server's socket buffers
// full, is cut off after feedWriteTimeout, over an event stream as over a
// WebSocket: its handler returns and gives back its watch, rather than
// blocking in a write for as long as the client keeps its connection open
// (an http.Server streaming feeds has no WriteTimeout to do it).
func TestFeedToAClientThatNeverReadsIsCutOff(t *testing.T) {
	t.Run("event stream", func(t *testing.T) {
		testClientThatNeverReads(t, "GET "+DefaultPrefix+"events HTTP/1.1\r\nHost: x\r\nX-User: alice\r\n\r\n", "retry:")
	})
	t.Run("WebSocket", func(t *testing.T) {
		testClientThatNeverReads(t, "GET "+DefaultPrefix+"events?since=2000-01-01T00:00:00Z HTTP/1.1\r\nHost: x\r\nX-User: alice\r\n"+
			"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
			"Sec-Websocket-Accept:")
	})
}

// testClientThatNeverReads sends request on a raw connection with a small
// receive buffer, reads up to the line starting with opened, then never
// reads again while alice's operations change.
func testClientThatNeverReads(t *testing.T, request, opened string) {
	defer func(d time.Duration) { feedWriteTimeout = d }(feedWriteTimeout)
	feedWriteTimeout = 100 * time.Millisecond

	m, err := New(Config{Owner: func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil },
		MaxWatchesPerOwner: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	handler := m.Handler(http.NotFoundHandler())
	ended := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.ServeHTTP(w, r)
		if strings.HasSuffix(r.URL.Path, "/events") {
			close(ended)
		}
	}))
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := conn.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	// Read up to the line that says the feed is open; then never read
	// again.
	br := bufio.NewReaderSize(conn, 512)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the answer's head: %v", err)
		}
		if strings.HasPrefix(line, opened) {
			break
		}
	}

	// Far more than the kernel buffers on both sides hold, in fewer
	// changes than the feed holds for its client (past that it is dropped
	// as behind): the feed's writes block.
	asAlice := httptest.NewRequest(http.MethodGet, "/", nil)
	asAlice.Header.Set("X-User", "alice")
	alice, _ := m.owner(asAlice)
	message := strings.Repeat("x", 64<<10)
	for i := range feedBuffer - 50 {
		now := time.Now()
		op := &backend.Operation{ID: "op" + strconv.Itoa(i), Owner: alice, Status: backend.Succeeded, ExpiresAt: time.Now().Add(time.Hour),
			Progress: backend.Progress{Percent: 1, Message: message}, Timeout: time.Hour, Retention: time.Hour,
			CreatedAt: now, UpdatedAt: now}
		if _, _, err := m.cfg.Backend.Create(context.Background(), op); err != nil {
			t.Fatal(err)
		}
	}
	testwait.Recv(t, ended, "the feed to a client that never reads to end")
	if ok, _ := m.watches.acquire(alice); !ok {
		t.Error("the ended feed still holds its watch (MaxWatchesPerOwner 1)")
	}
}

// changesThatFail is a memory backend whose Changes fails while dead, as a
// database that went away does, and counts the calls.
type changesThatFail struct {
	*memory.Backend
	dead  atomic.Bool
	calls chan struct{}
}

func (b *changesThatFail) Changes(ctx context.Context, q backend.ChangeQuery) ([]*backend.Operation, error) {
	defer func() {
		select {
		case b.calls <- struct{}{}:
		default:
		}
	}()
	if b.dead.Load() {
		return nil, errors.New("connection refused")
	}
	return b.Backend.Changes(ctx, q)
}

// countingHandler counts log records by level and message.
type countingHandler struct {
	mu      sync.Mutex
	records map[string]int // "LEVEL message"
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records[r.Level.String()+" "+r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for k, v := range h.records {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

// With its database gone under an open feed, the poller neither spins nor
// floods the log: it says so once, backs off, and says when it reads
// again; the feed stays open and gets the changes it missed.
func TestFeedPollerUnderADeadDatabase(t *testing.T) {
	b := &changesThatFail{Backend: memory.New(memory.Config{}), calls: make(chan struct{})}
	logs := &countingHandler{records: make(map[string]int)}
	m, err := New(Config{Backend: b, Owner: func(r *http.Request) (string, error) { return "alice", nil },
		FeedPollInterval: time.Millisecond, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	sub, _, ok := m.feeds.subscribe("alice")
	if !ok {
		t.Fatal("subscribe refused")
	}
	defer m.feeds.unsubscribe(sub)
	testwait.Recv(t, b.calls, "the poller's first read")

	b.dead.Store(true)
	for range 6 {
		testwait.Recv(t, b.calls, "the poller's reads of a dead database")
	}
	if n := logs.count("WARN asyncreply: reading changes for the feeds failed"); n != 1 {
		t.Errorf("the poller logged its failure %d times in 6 reads of a dead database, want once", n)
	}

	now := time.Now()
	if _, _, err := b.Backend.Create(context.Background(), &backend.Operation{ID: "late", Owner: "alice", Status: backend.NotStarted,
		Timeout: time.Hour, Retention: time.Hour, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	b.dead.Store(false)
	if op := testwait.Recv(t, sub.changes, "the change made while the database was gone"); op.ID != "late" {
		t.Errorf("the feed got %s, want late", op.ID)
	}
	if n := logs.count("INFO asyncreply: reading changes for the feeds works again"); n != 1 {
		t.Errorf("the poller logged its recovery %d times, want once", n)
	}
}
