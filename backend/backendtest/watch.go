package backendtest

import (
	"fmt"
	"testing"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

func testWatchWakesOnEveryChange(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	mustCreate(t, b, op)
	// Two watchers of one operation: a web page and an SSE stream, say.
	first := mustWatch(t, b, op.ID)
	second := mustWatch(t, b, op.ID)

	changes := []struct {
		what   string
		change func()
	}{
		{"MarkRunning", func() { mustMarkRunning(t, b, op.ID, now()) }},
		{"SetProgress", func() { mustSetProgress(t, b, op.ID, backend.Progress{Percent: 50, Message: "halfway"}) }},
		{"Complete", func() {
			mustComplete(t, b, op.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: now()})
		}},
		{"Cancel of the completed operation", func() { mustCancel(t, b, op.ID, now()) }},
	}
	for _, c := range changes {
		// A wake-up left from the previous change must not pass for this one.
		drain(first)
		drain(second)
		c.change()
		testwait.Recv(t, first, "the first watcher's wake-up after "+c.what)
		testwait.Recv(t, second, "the second watcher's wake-up after "+c.what)
	}

	canceled := newOperation(now())
	mustCreate(t, b, canceled)
	watch := mustWatch(t, b, canceled.ID)
	mustCancel(t, b, canceled.ID, now())
	testwait.Recv(t, watch, "a wake-up after Cancel of a NotStarted operation")
}

// mustWatch starts a watch stopped at the end of the test and returns its
// channel.
func mustWatch(t *testing.T, b backend.Backend, id string) <-chan struct{} {
	t.Helper()
	changes, stop, err := b.Watch(t.Context(), id)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	t.Cleanup(stop)
	return changes
}

// A stopped watch is never read again; a backend that keeps sending to it
// would block or leak, which the changes below would expose.
func testWatchStopEndsWatch(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	mustCreate(t, b, op)
	for range 100 {
		_, stop, err := b.Watch(t.Context(), op.ID)
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		stop()
	}
	// Stopped before a change as well as after one, never read.
	_, stopLater, err := b.Watch(t.Context(), op.ID)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}

	// The changes run in their own goroutine so that a backend blocking on
	// a stopped watch fails the wait below instead of hanging the test.
	changed := make(chan error, 1)
	go func() {
		ctx := t.Context()
		if _, err := b.MarkRunning(ctx, op.ID, now()); err != nil {
			changed <- fmt.Errorf("MarkRunning: %w", err)
			return
		}
		stopLater()
		for i := range 10 {
			if err := b.SetProgress(ctx, op.ID, backend.Progress{Percent: i * 10}, now()); err != nil {
				changed <- fmt.Errorf("SetProgress: %w", err)
				return
			}
		}
		_, err := b.Complete(ctx, op.ID, backend.Outcome{Status: backend.Succeeded, At: now()})
		changed <- err
	}()
	if err := testwait.Recv(t, changed, "changes to an operation whose watches were all stopped"); err != nil {
		t.Fatalf("changing an operation whose watches were stopped: %v", err)
	}
}

// The documented pattern, watch then Get, must see the final state however
// the completion interleaves with it: the wake-up must never fall between
// registering the watch and reading the operation.
func testWatchNeverLosesFinalWakeUp(t *testing.T, b backend.Backend) {
	for i := range 100 {
		op := newOperation(now())
		mustCreate(t, b, op)
		mustMarkRunning(t, b, op.ID, now())

		finished := make(chan error, 1)
		go func() {
			if i%2 == 0 {
				_, err := b.Complete(t.Context(), op.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: now()})
				finished <- err
			} else {
				finished <- b.Cancel(t.Context(), op.ID, now())
			}
		}()

		changes, stop, err := b.Watch(t.Context(), op.ID)
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
		for !mustGet(t, b, op.ID).Status.Done() {
			testwait.Recv(t, changes, fmt.Sprintf("the wake-up of round %d's completion (watch, then Get)", i))
		}
		stop()
		if err := testwait.Recv(t, finished, "the concurrent completion to return"); err != nil {
			t.Fatalf("concurrent completion: %v", err)
		}
	}
}
