package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"
)

// maxTransitions bounds how many transitions share one transaction.
const maxTransitions = 128

// transitionTimeout bounds one shared transaction, whatever its callers'
// contexts: a caller, once its transition is handed over, waits for it.
const transitionTimeout = 15 * time.Second

// A transition is one change to one operation — marking it running,
// recording its progress or its outcome — in the transaction it shares
// with those handed over meanwhile. Each committed on its own, the changes
// of the operations executing at once queued behind each other for the
// database's one connection, each then writing the same pages to the WAL
// and taking the file's write lock again; in one transaction, they share
// all three. The statements run in the order the transitions were handed
// over, each seeing the ones before, so of two completions of one
// operation the first still wins. Like any write but accepting and
// canceling, the transaction commits with synchronous=NORMAL.
type transition struct {
	ctx context.Context // the caller's: ended before its turn, it is skipped
	// run applies the change in tx. An error aborts the whole transaction:
	// each of its transitions is then run again in one of its own, so that
	// one that fails fails only itself. What run finds, such as whether
	// the operation was changed, it keeps for its caller, set anew at each
	// run.
	run  func(ctx context.Context, tx *sql.Tx) error
	done chan error
}

// transitions runs the transitions of one backend's database, in a
// goroutine of its own until stop.
type transitions struct {
	db       *sql.DB
	requests chan *transition
	stopped  chan struct{}
	running  sync.WaitGroup
}

func startTransitions(db *sql.DB) *transitions {
	t := &transitions{db: db, requests: make(chan *transition), stopped: make(chan struct{})}
	t.running.Add(1)
	go t.loop()
	return t
}

// stop ends the loop once the transaction in progress, if any, is done.
// apply must not be called after stop.
func (t *transitions) stop() {
	close(t.stopped)
	t.running.Wait()
}

// apply runs fn in the next shared transaction and returns once it has
// committed, or failed. It returns ctx's error if ctx ends before fn is
// handed over; after that it waits for the outcome, so that a caller is
// never told a change failed that was made.
func (t *transitions) apply(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	tr := &transition{ctx: ctx, run: fn, done: make(chan error, 1)}
	select {
	case t.requests <- tr:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-tr.done
}

func (t *transitions) loop() {
	defer t.running.Done()
	for {
		var batch []*transition
		select {
		case tr := <-t.requests:
			batch = append(batch, tr)
		case <-t.stopped:
			return
		}
	gather:
		for len(batch) < maxTransitions {
			select {
			case tr := <-t.requests:
				batch = append(batch, tr)
			default:
				break gather
			}
		}
		t.commit(batch)
	}
}

func (t *transitions) commit(batch []*transition) {
	ctx, cancel := context.WithTimeout(context.Background(), transitionTimeout)
	defer cancel()
	var live []*transition
	for _, tr := range batch {
		if err := tr.ctx.Err(); err != nil {
			tr.done <- err // given up before its turn: not run
			continue
		}
		live = append(live, tr)
	}
	if len(live) == 0 {
		return
	}
	err := inTx(ctx, t.db, func(tx *sql.Tx) error {
		for _, tr := range live {
			if err := tr.run(ctx, tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || len(live) == 1 {
		for _, tr := range live {
			tr.done <- err
		}
		return
	}
	for _, tr := range live {
		tr.done <- runAlone(ctx, t.db, tr.run)
	}
}

// runAlone runs fn in a transaction of its own on db.
func runAlone(ctx context.Context, db *sql.DB, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return inTx(ctx, db, func(tx *sql.Tx) error { return fn(ctx, tx) })
}

// inTx runs fn in a transaction on db, committed if fn succeeds. Errors of
// fn are returned as they are.
func inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return translate(fmt.Errorf("sqlite: %w", err))
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return translate(tx.Commit())
}
