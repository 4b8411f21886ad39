package asyncreply

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// An event stream whose client stops reading, with the server's socket
// buffers full, is cut off after feedWriteTimeout, as a WebSocket is: its
// handler returns and gives back its watch, rather than blocking in a
// write for as long as the client keeps its connection open (an
// http.Server streaming feeds has no WriteTimeout to do it).
func TestFeedStreamToAClientThatNeverReadsIsCutOff(t *testing.T) {
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
	if _, err := conn.Write([]byte("GET " + DefaultPrefix + "events HTTP/1.1\r\nHost: x\r\nX-User: alice\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// Read up to the stream's first line, so that the feed is open; then
	// never read again.
	br := bufio.NewReaderSize(conn, 512)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream's head: %v", err)
		}
		if strings.HasPrefix(line, "retry:") {
			break
		}
	}

	// Far more than the kernel buffers on both sides hold, in fewer changes
	// than the feed holds for its client (it would be dropped as behind): the stream's
	// writes block.
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
	testwait.Recv(t, ended, "the stream to a client that never reads to end")
	if ok, _ := m.watches.acquire(alice); !ok {
		t.Error("the ended stream still holds its watch (MaxWatchesPerOwner 1)")
	}
}
