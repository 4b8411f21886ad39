package asyncreply

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// feedHelloWait is how long a WebSocket feed whose URL says nowhere to
// start (neither ?after= nor ?since=) waits for the client's first message,
// {"resume": cursor} or {}, before it starts from when the socket opened.
// Nothing that changes meanwhile is lost: the feed is open already.
const feedHelloWait = time.Second

// feedWriteTimeout bounds one message's write, on a WebSocket or an event
// stream: a client that stops reading is cut off rather than held. A
// variable, so that tests need not wait for it.
var feedWriteTimeout = 10 * time.Second

// isWebSocketUpgrade reports whether r asks to become a WebSocket.
func isWebSocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// feedMessage is one text message of a WebSocket feed: a change's cursor
// and the operation's status document.
type feedMessage struct {
	ID        string          `json:"id"`
	Operation json.RawMessage `json:"operation"`
}

// feedHello is what a WebSocket client may send first: the cursor of the
// last change it saw, to resume after it.
type feedHello struct {
	Resume string `json:"resume"`
}

// serveFeedSocket serves the feed over a WebSocket: one text message per
// change, {"id": cursor, "operation": status document}. Where to start is
// the URL's ?after= or ?since=, or else the client's first message,
// {"resume": cursor} (or {} for now). Only same-origin pages may open it
// (a browser's Origin must name the request's host), as coder/websocket
// checks by default, so that another site's page cannot read a user's
// operations with the user's cookies. The server closes it with 1001 when
// it shuts down and 1013 when the client fell behind (it resumes from its
// last id); other messages from the client are ignored.
func (m *Middleware) serveFeedSocket(w http.ResponseWriter, f *feed, from feedPosition) {
	r := f.r
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the request
	}
	defer conn.CloseNow()
	conn.SetReadLimit(4096)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hello := make(chan []byte, 1)
	readerDone := make(chan struct{})
	go func() {
		// Reading also answers pings and notices the client's close.
		defer close(readerDone)
		defer cancel()
		first := true
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			if first {
				first = false
				hello <- data
			}
		}
	}()
	defer func() {
		conn.CloseNow()
		<-readerDone
	}()

	q := r.URL.Query()
	if q.Get("after") == "" && q.Get("since") == "" && r.Header.Get("Last-Event-ID") == "" {
		timer := time.NewTimer(feedHelloWait)
		select {
		case data := <-hello:
			var h feedHello
			if err := json.Unmarshal(data, &h); err != nil {
				conn.Close(websocket.StatusPolicyViolation, `the first message must be {"resume": cursor} or {}`)
				timer.Stop()
				return
			}
			if h.Resume != "" {
				if err := from.resumeAt(h.Resume); err != nil {
					conn.Close(websocket.StatusPolicyViolation, "resume: not a cursor this feed sent")
					timer.Stop()
					return
				}
			}
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
	}

	end := f.run(ctx, from, func(cursor string, doc []byte) error {
		msg, err := json.Marshal(feedMessage{ID: cursor, Operation: doc})
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, feedWriteTimeout)
		defer cancel()
		return conn.Write(wctx, websocket.MessageText, msg)
	}, func() error {
		pctx, cancel := context.WithTimeout(ctx, feedWriteTimeout)
		defer cancel()
		return conn.Ping(pctx)
	})
	switch end {
	case feedShutdown:
		conn.Close(websocket.StatusGoingAway, "server shutting down")
	case feedBehind:
		conn.Close(websocket.StatusTryAgainLater, "fell behind: resume from the last id")
	}
}
