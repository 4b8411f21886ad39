package asyncreply

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// serveFeed answers GET Prefix + "events": every change to the caller's own
// operations — created, running, progress, succeeded, failed, canceled — as
// Server-Sent Events, or, when the request asks for a WebSocket upgrade,
// over a WebSocket (see serveFeedSocket). Each change is the operation's
// status document, as the list shows it, with the change's cursor (its
// updatedAt and id) as the event's id.
//
// Without Last-Event-ID (or ?after=) the feed starts from now, and may
// include changes of the last feedOverlap (2 s) when it is the one that
// starts the poller; with ?since= (RFC 3339) it starts with the changes
// made since then. With a cursor it resumes after it: at least once, since
// the changes of the feedOverlap before the cursor are sent again, so that
// one whose transaction committed late is not lost. Every change is sent
// at least once, and a client tells a repeat by the event's id (or the
// operation's id and updatedAt). The stream never ends on its own: it ends when the client
// leaves, the server shuts down, or the client fell too far behind (it
// then resumes from its last id).
//
// Like the list, it exists only where operations are owner-bound, and is a
// 404 otherwise; a backend that does not list changes
// (backend.ChangeLister) answers 501. It counts as an event stream against
// Config.MaxWatches and MaxWatchesPerOwner.
func (m *Middleware) serveFeed(w http.ResponseWriter, r *http.Request) {
	if m.cfg.Owner == nil {
		writeNotFound(w) // as the list: there is no "own" without owners
		return
	}
	if r.Method != http.MethodGet {
		writeMethodNotAllowed(w, "GET")
		return
	}
	owner, err := m.owner(r)
	if err != nil {
		writeProblem(w, http.StatusNotFound, "Not Found", "The request's credentials do not identify whose operations to follow.")
		return
	}
	if m.changes == nil {
		writeProblem(w, http.StatusNotImplemented, "Feed not supported", "This server's backend does not list changes to operations.")
		return
	}
	from, err := feedStart(r)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "Bad feed position", err.Error())
		return
	}
	release, ok := m.openWatch(w, owner)
	if !ok {
		return
	}
	defer release()
	sub, horizon, ok := m.feeds.subscribe(owner)
	if !ok {
		writeUnavailable(w, m.retryAfter)
		return
	}
	defer m.feeds.unsubscribe(sub)
	f := &feed{m: m, r: r, owner: owner, sub: sub, horizon: horizon, serverDone: m.serverShutdown(r.Context())}
	if isWebSocketUpgrade(r) {
		m.serveFeedSocket(w, f, from)
		return
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// Each write has feedWriteTimeout, as a WebSocket's message has: a
	// client that stops reading is cut off, and its watch given back,
	// rather than holding the handler in a write for as long as it keeps
	// its connection open. A writer without deadlines goes without.
	write := func(format string, args ...any) error {
		rc.SetWriteDeadline(time.Now().Add(feedWriteTimeout))
		fmt.Fprintf(w, format, args...)
		return rc.Flush()
	}
	if write("retry: %d\n\n", m.cfg.RetryAfter.Milliseconds()) != nil {
		return
	}
	f.run(r.Context(), from, func(cursor string, doc []byte) error {
		return write("event: status\nid: %s\ndata: %s\n\n", cursor, doc)
	}, func() error {
		return write(": keep-alive\n\n")
	})
}

// feedPosition is where a feed starts: from now (the zero value), after a
// cursor, or since a time.
type feedPosition struct {
	after   backend.ChangeCursor
	resumed bool // after is set
	since   time.Time
}

// feedStart reads where the request's feed starts: Last-Event-ID or
// ?after= (a cursor), or ?since= (RFC 3339); the error says what to fix.
func feedStart(r *http.Request) (feedPosition, error) {
	var p feedPosition
	cursor := r.Header.Get("Last-Event-ID")
	if cursor == "" {
		cursor = r.URL.Query().Get("after")
	}
	if cursor != "" {
		return p, p.resumeAt(cursor)
	}
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return p, errors.New("since must be an RFC 3339 time, e.g. 2026-12-01T20:00:00Z")
		}
		p.since = t
	}
	return p, nil
}

func (p *feedPosition) resumeAt(cursor string) error {
	c, err := backend.ParseChangeCursor(cursor)
	if err != nil || c == (backend.ChangeCursor{}) {
		return errors.New("the cursor to resume after (Last-Event-ID, after or resume) is not an id this feed sent; start again without it")
	}
	p.after, p.resumed = c, true
	return nil
}

// cursorTime is t within what a cursor holds, in nanoseconds since 1970:
// a start before 1970 (a client's ?since=, or a cursor at the epoch less
// feedOverlap) is the start of everything, and one after now starts from
// now, rather than wrapping around into a cursor the store refuses, or one
// far in the future that skips the caller's history.
func cursorTime(t, now time.Time) time.Time {
	if epoch := time.Unix(0, 0); t.Before(epoch) {
		return epoch
	}
	if t.After(now) {
		return now
	}
	return t
}

// feed is one open feed of an owner's changes, whatever carries it.
type feed struct {
	m          *Middleware
	r          *http.Request
	owner      string
	sub        *feedSub
	horizon    backend.ChangeCursor // where the poller stood when the feed opened
	serverDone <-chan struct{}
}

// feedEnd is why a feed ended.
type feedEnd int

const (
	feedLeft     feedEnd = iota // the client left, or a write to it failed
	feedShutdown                // the server or the Middleware shuts down
	feedBehind                  // the client fell behind: it resumes
)

// run sends the changes the feed starts with, then every change the poller
// delivers, with keepAlive every keepAliveInterval while none comes, until
// the feed ends, and says why.
func (f *feed) run(ctx context.Context, from feedPosition, send func(cursor string, doc []byte) error, keepAlive func() error) feedEnd {
	emit := func(op *backend.Operation) error {
		doc := newStatusDocument(op, f.m.monitorURLs(f.r, op.ID)).marshal()
		return send(backend.CursorOf(op).String(), doc)
	}
	sent, end, ok := f.catchUp(ctx, from, emit)
	if !ok {
		return end
	}
	keepAliveTicker := time.NewTicker(keepAliveInterval)
	defer keepAliveTicker.Stop()
	for {
		select {
		case op := <-f.sub.changes:
			if _, ok := sent[keyOf(op)]; ok {
				continue // sent while catching up
			}
			if emit(op) != nil {
				return feedLeft
			}
		case <-keepAliveTicker.C:
			if keepAlive() != nil {
				return feedLeft
			}
		case <-f.sub.behind:
			return feedBehind
		case <-ctx.Done():
			return feedLeft
		case <-f.m.closed:
			return feedShutdown
		case <-f.serverDone:
			return feedShutdown
		}
	}
}

// catchUp sends what changed since the feed's start, read from the backend
// a page at a time, and returns the changes sent that the poller may
// deliver again (those after the feed's horizon minus feedOverlap), so
// that they are not sent twice.
func (f *feed) catchUp(ctx context.Context, from feedPosition, emit func(*backend.Operation) error) (sent map[changeKey]struct{}, end feedEnd, ok bool) {
	var after backend.ChangeCursor
	switch {
	case from.resumed:
		after = backend.ChangeCursor{UpdatedAt: cursorTime(from.after.UpdatedAt.Add(-feedOverlap), f.m.cfg.now())}
	case !from.since.IsZero():
		after = backend.ChangeCursor{UpdatedAt: cursorTime(from.since, f.m.cfg.now())}
	default:
		return nil, 0, true
	}
	sent = make(map[changeKey]struct{})
	redelivered := f.horizon.UpdatedAt.Add(-feedOverlap)
	for {
		store, cancel := storeContext(ctx)
		ops, err := f.m.changes.Changes(store, backend.ChangeQuery{Owner: f.owner, After: after.String(), Limit: feedPage, Now: f.m.cfg.now()})
		cancel()
		if err != nil {
			f.m.cfg.Logger.Error("asyncreply: reading changes for a feed failed", "error", err)
			return nil, feedLeft, false
		}
		for _, op := range ops {
			if from.resumed && keyOf(op) == (changeKey{id: from.after.ID, updatedAt: from.after.UpdatedAt.UnixNano()}) {
				continue // the change the client named: it has it
			}
			if emit(op) != nil {
				return nil, feedLeft, false
			}
			if !op.UpdatedAt.Before(redelivered) {
				sent[keyOf(op)] = struct{}{}
			}
		}
		if len(ops) < feedPage {
			return sent, 0, true
		}
		after = backend.CursorOf(ops[len(ops)-1])
		select {
		case <-f.sub.behind:
			return nil, feedBehind, false
		case <-ctx.Done():
			return nil, feedLeft, false
		case <-f.m.closed:
			return nil, feedShutdown, false
		case <-f.serverDone:
			return nil, feedShutdown, false
		default:
		}
	}
}
