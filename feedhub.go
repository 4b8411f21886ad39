package asyncreply

import (
	"context"
	"sync"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// feedOverlap is how far behind its cursor the feed poller re-reads, and a
// resumed feed starts, so that a change is not missed when it becomes
// visible after a later one was read: UpdatedAt is the time the changing
// call was given, and its transaction may commit later than another's
// (commit-order skew), or come from a process whose clock is behind. A
// change that becomes visible more than feedOverlap after its UpdatedAt is
// missed by feeds open at the time; its operation's next change is not.
const feedOverlap = 2 * time.Second

// feedBuffer is how many changes an open feed holds for its client before
// it is closed for falling behind; the client resumes from its last
// cursor, so that no slow client grows the server's memory.
const feedBuffer = 256

// feedPollMaxBackoff caps the poller's wait between two reads while the
// store fails: the wait doubles from Config.FeedPollInterval after each
// failure, so that a store that is gone is not read at every tick, and
// feeds get what they missed within about this once it is back.
const feedPollMaxBackoff = 5 * time.Second

// feedPage is how many changes one backend call of the poller, or of a
// feed catching up, reads.
const feedPage = 500

// changeKey identifies one change of one operation, so that a change read
// twice (in the overlap behind a cursor) is delivered once.
type changeKey struct {
	id        string
	updatedAt int64 // unix nanoseconds
}

func keyOf(op *backend.Operation) changeKey {
	return changeKey{id: op.ID, updatedAt: op.UpdatedAt.UnixNano()}
}

// feedHub follows every owner's changes for the feeds open in this
// process: one poller per Middleware, running only while a feed is open,
// reads what changed after its cursor every Config.FeedPollInterval (or
// sooner, when this process changed an operation) and hands each change to
// the open feeds of its owner. Feeds never query the backend on a timer of
// their own.
type feedHub struct {
	m      *Middleware
	nudges chan struct{} // a change was made here: poll now

	mu      sync.Mutex
	subs    map[string]map[*feedSub]struct{} // by owner
	open    int
	running bool                 // the poller runs
	done    chan struct{}        // closed when the running poller returns
	cursor  backend.ChangeCursor // the latest change the poller read
	closed  bool                 // Shutdown: no more feeds

	// The poller's own: how many reads in a row failed, since when.
	failures     int
	failingSince time.Time
}

// feedSub is one open feed's share of the poller's changes.
type feedSub struct {
	owner   string
	changes chan *backend.Operation
	behind  chan struct{} // closed when changes was full: the feed must end
	dropped bool          // behind is closed; under feedHub.mu
}

func newFeedHub(m *Middleware) *feedHub {
	return &feedHub{m: m, nudges: make(chan struct{}, 1), subs: make(map[string]map[*feedSub]struct{})}
}

// nudge asks the poller, if it runs, to poll now rather than at its next
// tick.
func (h *feedHub) nudge() {
	select {
	case h.nudges <- struct{}{}:
	default:
	}
}

// subscribe opens a feed of owner's changes, starting the poller if none
// runs, and returns where the poller stands: every change it reads from
// now on, the feed receives, and every change it delivers is after
// horizon minus feedOverlap. It returns false once the Middleware shuts
// down.
func (h *feedHub) subscribe(owner string) (sub *feedSub, horizon backend.ChangeCursor, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, backend.ChangeCursor{}, false
	}
	sub = &feedSub{owner: owner, changes: make(chan *backend.Operation, feedBuffer), behind: make(chan struct{})}
	if h.subs[owner] == nil {
		h.subs[owner] = make(map[*feedSub]struct{})
	}
	h.subs[owner][sub] = struct{}{}
	h.open++
	if !h.running {
		h.running, h.done = true, make(chan struct{})
		h.cursor = backend.ChangeCursor{UpdatedAt: h.m.cfg.now()}
		go h.poll(h.cursor.UpdatedAt, h.done)
	}
	return sub, h.cursor, true
}

// unsubscribe closes sub. The poller stops when no feed is left.
func (h *feedHub) unsubscribe(sub *feedSub) {
	h.mu.Lock()
	delete(h.subs[sub.owner], sub)
	if len(h.subs[sub.owner]) == 0 {
		delete(h.subs, sub.owner)
	}
	h.open--
	last := h.open == 0
	h.mu.Unlock()
	if last {
		h.nudge() // so that the poller sees it and returns now
	}
}

// shutdown refuses new feeds and waits for the poller to return; the open
// feeds end on the Middleware's closed channel.
func (h *feedHub) shutdown() {
	h.mu.Lock()
	h.closed = true
	running, done := h.running, h.done
	h.mu.Unlock()
	if running {
		<-done
	}
}

// poll is the poller: it reads the changes of every owner after its cursor,
// re-reading feedOverlap behind it, and delivers those it has not
// delivered yet, until no feed is open or the Middleware shuts down. It
// starts feedOverlap behind the time it started, so that a feed resuming
// as it starts misses no change that commits late, and a change made just
// before a feed opened, by a process whose clock is behind, is not lost.
func (h *feedHub) poll(started time.Time, done chan struct{}) {
	defer close(done)
	interval := h.m.cfg.FeedPollInterval
	// Nudges come with every change this process makes; under load, one
	// poll per tenth of the interval is enough.
	minGap := interval / 10
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	cursor := backend.ChangeCursor{UpdatedAt: started}
	seen := make(map[changeKey]struct{})
	for {
		cursor = h.pollOnce(cursor, seen)
		h.mu.Lock()
		h.cursor = cursor
		if h.open == 0 || h.m.shuttingDown() {
			h.running = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		select {
		case <-h.m.closed:
			continue
		case <-time.After(minGap):
		}
		if h.failures == 0 {
			select {
			case <-h.m.closed:
			case <-ticker.C:
			case <-h.nudges:
			}
			continue
		}
		// The store fails: back off rather than read it at every tick.
		backoff := time.NewTimer(min(interval<<min(h.failures, 16), feedPollMaxBackoff))
		select {
		case <-h.m.closed:
		case <-backoff.C:
		case <-h.nudges: // a change made here: the store answers again
		}
		backoff.Stop()
	}
}

// pollOnce reads every change after cursor minus feedOverlap, delivers
// those not in seen, and returns the new cursor. seen keeps the changes of
// the overlap behind it only.
func (h *feedHub) pollOnce(cursor backend.ChangeCursor, seen map[changeKey]struct{}) backend.ChangeCursor {
	after := backend.ChangeCursor{UpdatedAt: cursor.UpdatedAt.Add(-feedOverlap)}.String()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		ops, err := h.m.changes.Changes(ctx, backend.ChangeQuery{AnyOwner: true, After: after, Limit: feedPage, Now: h.m.cfg.now()})
		cancel()
		if err != nil {
			// Once, not at every tick while the store is away.
			if h.failures == 0 {
				h.failingSince = time.Now()
				h.m.cfg.Logger.Warn("asyncreply: reading changes for the feeds failed; retrying", "error", err)
			} else {
				h.m.cfg.Logger.Debug("asyncreply: reading changes for the feeds failed again", "failures", h.failures+1, "error", err)
			}
			h.failures++
			return cursor
		}
		if h.failures > 0 {
			h.m.cfg.Logger.Info("asyncreply: reading changes for the feeds works again",
				"failures", h.failures, "failing_for", time.Since(h.failingSince).Round(time.Millisecond))
			h.failures = 0
		}
		for _, op := range ops {
			c := backend.CursorOf(op)
			if cursor.Before(c) {
				cursor = c
			}
			key := keyOf(op)
			if _, ok := seen[key]; ok {
				continue
			}
			seen[key] = struct{}{}
			h.deliver(op)
		}
		if len(ops) < feedPage {
			break
		}
		after = backend.CursorOf(ops[len(ops)-1]).String()
	}
	horizon := cursor.UpdatedAt.Add(-feedOverlap).UnixNano()
	for key := range seen {
		if key.updatedAt < horizon {
			delete(seen, key) // no longer re-read
		}
	}
	return cursor
}

// deliver hands op to the open feeds of its owner. A feed whose buffer is
// full is told it fell behind, and gets nothing more.
func (h *feedHub) deliver(op *backend.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[op.Owner] {
		if sub.dropped {
			continue
		}
		select {
		case sub.changes <- op:
		default:
			sub.dropped = true
			close(sub.behind)
		}
	}
}

// nudgingBackend is the Middleware's backend, nudging the feed poller
// after every change this process makes, so that feeds open here see it at
// once rather than at the next tick.
type nudgingBackend struct {
	backend.Backend
	hub *feedHub
}

// Local forwards backend.Local, which embedding would hide.
func (b nudgingBackend) Local() bool { return backend.IsLocal(b.Backend) }

func (b nudgingBackend) Create(ctx context.Context, op *backend.Operation) (*backend.Operation, bool, error) {
	stored, created, err := b.Backend.Create(ctx, op)
	if created {
		b.hub.nudge()
	}
	return stored, created, err
}

func (b nudgingBackend) MarkRunning(ctx context.Context, id string, at time.Time) (*backend.Operation, error) {
	op, err := b.Backend.MarkRunning(ctx, id, at)
	if err == nil {
		b.hub.nudge()
	}
	return op, err
}

func (b nudgingBackend) SetProgress(ctx context.Context, id string, progress backend.Progress, at time.Time) error {
	err := b.Backend.SetProgress(ctx, id, progress, at)
	if err == nil {
		b.hub.nudge()
	}
	return err
}

func (b nudgingBackend) Complete(ctx context.Context, id string, outcome backend.Outcome) (bool, error) {
	won, err := b.Backend.Complete(ctx, id, outcome)
	if won {
		b.hub.nudge()
	}
	return won, err
}

func (b nudgingBackend) Cancel(ctx context.Context, id string, at time.Time) error {
	err := b.Backend.Cancel(ctx, id, at)
	if err == nil {
		b.hub.nudge()
	}
	return err
}
