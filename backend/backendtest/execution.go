package backendtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// ---- Start ----

func testStartExecutesEveryOperation(t *testing.T, b backend.Backend) {
	var before, after []*backend.Operation
	for range 3 {
		op := newOperation(now())
		mustCreate(t, b, op)
		before = append(before, op)
	}

	calls := newExecutions()
	execute := func(ctx context.Context, id string) error {
		calls.record(id)
		return completeSucceeded(ctx, b, id)
	}
	if err := b.Start(t.Context(), execute); err != nil {
		t.Fatalf("Start: %v", err)
	}
	for range 3 {
		op := newOperation(now())
		mustCreate(t, b, op)
		after = append(after, op)
	}

	for _, op := range before {
		testwait.Recv(t, calls.called(op.ID), "the execution of an operation created before Start")
	}
	for _, op := range after {
		testwait.Recv(t, calls.called(op.ID), "the execution of an operation created after Start")
	}
}

func testStartExecutesConcurrently(t *testing.T, b backend.Backend) {
	var inFlight atomic.Int32
	twoInFlight := make(chan struct{})
	markTwoInFlight := sync.OnceFunc(func() { close(twoInFlight) })
	release, _ := releasedAtCleanup(t)

	execute := func(ctx context.Context, id string) error {
		if inFlight.Add(1) >= 2 {
			markTwoInFlight()
		}
		defer inFlight.Add(-1)
		select {
		case <-release:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		return completeSucceeded(ctx, b, id)
	}
	if err := b.Start(t.Context(), execute); err != nil {
		t.Fatalf("Start: %v", err)
	}
	for range 4 {
		mustCreate(t, b, newOperation(now()))
	}
	testwait.Recv(t, twoInFlight, "two executions in flight at once (four operations, each blocked until released)")
}

func testSecondStartFails(t *testing.T, b backend.Backend) {
	execute := func(ctx context.Context, id string) error { return completeSucceeded(ctx, b, id) }
	if err := b.Start(t.Context(), execute); err != nil {
		t.Fatalf("first Start: %v", err)
	}
	if err := b.Start(t.Context(), execute); err == nil {
		t.Error("second Start returned no error")
	}
}

// ---- Stop ----

func testStopWaitsForRunningExecutions(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	started := make(chan struct{}, 1)
	released, release := releasedAtCleanup(t)
	var returned atomic.Bool
	causeAtReturn := make(chan error, 1)

	execute := func(ctx context.Context, id string) error {
		defer returned.Store(true)
		if _, err := b.MarkRunning(ctx, id, now()); err != nil {
			return err
		}
		signal(started, struct{}{})
		select {
		case <-released:
		case <-ctx.Done():
		}
		signal(causeAtReturn, context.Cause(ctx))
		return completeOutcome(ctx, b, id)
	}
	if err := b.Start(t.Context(), execute); err != nil {
		t.Fatalf("Start: %v", err)
	}
	mustCreate(t, b, op)
	testwait.Recv(t, started, "the execution to start")

	stop := stopInBackground(testwait.Timeout, b, &returned)
	testwait.Recv(t, stop.calling, "Stop to be called")
	select {
	case err := <-stop.result:
		t.Fatalf("Stop returned (%v) while an execution was still running and its context had not ended", err)
	default:
	}
	release()

	if err := testwait.Recv(t, stop.result, "Stop to return once the running execution finished"); err != nil {
		t.Errorf("Stop after the executions finished on their own: %v", err)
	}
	if !stop.executionHadReturned.Load() {
		t.Error("Stop returned before the running execution did")
	}
	if cause := testwait.Recv(t, causeAtReturn, "the execution's context cause"); cause != nil {
		t.Errorf("the execution's context was canceled (cause %v) although it finished before Stop's context ended", cause)
	}
	if got := mustGet(t, b, op.ID); got.Status != backend.Succeeded {
		t.Errorf("operation drained by Stop ended %q, want %q", got.Status, backend.Succeeded)
	}
}

func testStopCancelsExecutionsWhenContextEnds(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	started := make(chan struct{}, 1)
	causes := make(chan error, 1)
	finishUp, release := releasedAtCleanup(t)
	var returned atomic.Bool

	execute := func(ctx context.Context, id string) error {
		defer returned.Store(true)
		if _, err := b.MarkRunning(ctx, id, now()); err != nil {
			return err
		}
		signal(started, struct{}{})
		select {
		case <-ctx.Done():
		case <-finishUp:
		}
		signal(causes, context.Cause(ctx))
		// Held until the test has checked that Stop is still waiting.
		<-finishUp
		return fmt.Errorf("execution abandoned: %w", context.Cause(ctx))
	}
	if err := b.Start(t.Context(), execute); err != nil {
		t.Fatalf("Start: %v", err)
	}
	mustCreate(t, b, op)
	testwait.Recv(t, started, "the execution to start")

	stop := stopInBackground(0, b, &returned) // a context that has already ended
	cause := testwait.Recv(t, causes, "Stop with an ended context to cancel the running execution")
	if !errors.Is(cause, backend.ErrShutdown) {
		t.Errorf("context.Cause of the execution canceled by Stop = %v, want backend.ErrShutdown", cause)
	}
	select {
	case <-stop.result:
		t.Error("Stop returned while the canceled execution had not returned yet")
	default:
	}
	release()

	testwait.Recv(t, stop.result, "Stop to return once the canceled execution returned")
	if !stop.executionHadReturned.Load() {
		t.Error("Stop returned before the canceled execution did")
	}
}

// ---- helpers: execution ----

// executions records the IDs an ExecuteFunc was called with, for rules that
// wait for an execution or count them.
type executions struct {
	mu     sync.Mutex
	counts map[string]int
	first  map[string]chan struct{} // closed at an ID's first call
}

func newExecutions() *executions {
	return &executions{counts: make(map[string]int), first: make(map[string]chan struct{})}
}

func (e *executions) record(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts[id]++
	if e.counts[id] == 1 {
		close(e.firstCall(id))
	}
}

// called returns a channel closed once execute has been called with id.
func (e *executions) called(id string) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.firstCall(id)
}

func (e *executions) firstCall(id string) chan struct{} {
	ch, ok := e.first[id]
	if !ok {
		ch = make(chan struct{})
		e.first[id] = ch
	}
	return ch
}

func (e *executions) count(id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[id]
}

// completeSucceeded is the ExecuteFunc of a worker whose handler answers at
// once.
func completeSucceeded(ctx context.Context, b backend.Backend, id string) error {
	if _, err := b.MarkRunning(ctx, id, now()); err != nil {
		if errors.Is(err, backend.ErrFinished) {
			return nil
		}
		return err
	}
	return completeOutcome(ctx, b, id)
}

// completeOutcome completes a running operation as succeeded.
func completeOutcome(ctx context.Context, b backend.Backend, id string) error {
	_, err := b.Complete(ctx, id, backend.Outcome{Status: backend.Succeeded, Response: []byte("done"), At: now()})
	return err
}

// releasedAtCleanup returns a channel that blocked executions wait on and the
// function that closes it. The cleanup closes it too, before the backend's
// own cleanup stops the backend, so that a failed test never leaves an
// execution blocked and Stop hanging.
func releasedAtCleanup(t *testing.T) (released <-chan struct{}, release func()) {
	ch := make(chan struct{})
	release = sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	return ch, release
}

// signal sends on a channel of capacity one without blocking: at-least-once
// execution may call an ExecuteFunc twice, and the second call must not hang.
func signal[T any](ch chan<- T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// stopCall is a call to Stop running in its own goroutine.
type stopCall struct {
	calling <-chan struct{} // closed just before Stop is called
	result  <-chan error    // receives what Stop returned
	// executionHadReturned is whether the execution under test had returned
	// at the instant Stop returned, read there rather than later on the test
	// goroutine, which may run only after the execution caught up.
	executionHadReturned atomic.Bool
}

// stopInBackground calls Stop with a context of the given timeout (zero: one
// that has already ended). executionReturned, when not nil, is read as soon
// as Stop returns.
func stopInBackground(timeout time.Duration, b backend.Backend, executionReturned *atomic.Bool) *stopCall {
	calling := make(chan struct{})
	result := make(chan error, 1)
	call := &stopCall{calling: calling, result: result}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if timeout <= 0 {
			<-ctx.Done()
		}
		close(calling)
		err := b.Stop(ctx)
		if executionReturned != nil {
			call.executionHadReturned.Store(executionReturned.Load())
		}
		result <- err
	}()
	return call
}

// stopWithin stops the backend, failing the test if Stop does not return in
// time; after it returns, no execution is running or will start.
func stopWithin(t *testing.T, b backend.Backend, timeout time.Duration) {
	t.Helper()
	if err := testwait.Recv(t, stopInBackground(timeout, b, nil).result, "Stop to return"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}
