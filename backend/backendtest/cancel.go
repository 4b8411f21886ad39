package backendtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

func testCancelMarksCanceled(t *testing.T, b backend.Backend) {
	for _, running := range []bool{false, true} {
		op := newOperation(now())
		mustCreate(t, b, op)
		what := "NotStarted operation"
		if running {
			mustMarkRunning(t, b, op.ID, now())
			what = "Running operation"
		}
		at := now()
		mustCancel(t, b, op.ID, at)
		assertDone(t, "Get after Cancel of a "+what, mustGet(t, b, op.ID), backend.Canceled, at.Add(op.Retention))
	}
}

// DELETE of a finished operation forgets it too: its response and failure go,
// and it stays only as a tombstone kept from the cancellation on.
func testCancelForgetsDoneOperations(t *testing.T, b backend.Backend) {
	for _, done := range finishedOperations(t, b) {
		if done.op.Status == backend.Canceled {
			continue // OfCanceledChangesNothing
		}
		at := now().Add(time.Minute)
		if err := b.Cancel(t.Context(), done.op.ID, at); err != nil {
			t.Errorf("Cancel of %s: %v", done.what, err)
			continue
		}
		got := mustGet(t, b, done.op.ID)
		assertDone(t, "Get after Cancel of "+done.what, got, backend.Canceled, at.Add(done.op.Retention))
		if len(got.Response) != 0 || got.Failure != nil {
			t.Errorf("Get after Cancel of %s: Response %q and Failure %s kept, want both dropped", done.what, got.Response, describeFailure(got.Failure))
		}
	}
}

func testCancelOfCanceledChangesNothing(t *testing.T, b backend.Backend) {
	for _, done := range finishedOperations(t, b) {
		if done.op.Status != backend.Canceled {
			continue // ForgetsDoneOperations
		}
		// A later time would extend the tombstone if the second Cancel
		// changed anything.
		if err := b.Cancel(t.Context(), done.op.ID, now().Add(time.Hour)); err != nil {
			t.Errorf("second Cancel of %s: %v, want nil", done.what, err)
		}
		assertOperation(t, done.what+" after a second Cancel", mustGet(t, b, done.op.ID), done.op)
	}
}

func testCancelUnknownIsNotFound(t *testing.T, b backend.Backend) {
	err := b.Cancel(t.Context(), newID(), now())
	requireErrorIs(t, err, backend.ErrNotFound, "Cancel of an unknown ID")
}

func testCancelCancelsRunningExecutionOnce(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	probe := newOperation(now())
	calls := newExecutions()
	started := make(chan struct{}, 1)
	causes := make(chan error, 1)
	testOver, _ := releasedAtCleanup(t)

	execute := func(ctx context.Context, id string) error {
		calls.record(id)
		if id != op.ID {
			return completeSucceeded(ctx, b, id)
		}
		if _, err := b.MarkRunning(ctx, id, now()); err != nil {
			return err
		}
		signal(started, struct{}{})
		select {
		case <-ctx.Done():
		case <-testOver:
		}
		signal(causes, context.Cause(ctx))
		// Abandoned, as a real worker does when its context ends: a backend
		// that retries abandoned attempts must still not retry this one.
		return fmt.Errorf("execution abandoned: %w", context.Cause(ctx))
	}
	if err := b.Start(t.Context(), execute); err != nil {
		t.Fatalf("Start: %v", err)
	}
	mustCreate(t, b, op)
	testwait.Recv(t, started, "the execution of the operation to start")
	mustCancel(t, b, op.ID, now())

	cause := testwait.Recv(t, causes, "the running execution's context to be canceled by Cancel")
	if !errors.Is(cause, backend.ErrCanceled) {
		t.Errorf("context.Cause of the canceled execution = %v, want backend.ErrCanceled", cause)
	}

	// Something created after the abandoned attempt has run, and Stop has
	// waited for every execution, so a retry would have been called by now.
	mustCreate(t, b, probe)
	testwait.Recv(t, calls.called(probe.ID), "the execution of an operation created after the cancellation")
	stopWithin(t, b, testwait.Timeout)

	if n := calls.count(op.ID); n != 1 {
		t.Errorf("execute was called %d times for the canceled operation, want 1: cancellation must not trigger a retry", n)
	}
	if got := mustGet(t, b, op.ID); got.Status != backend.Canceled || got.Attempt != 1 {
		t.Errorf("canceled operation ended with status %q attempt %d, want %q attempt 1", got.Status, got.Attempt, backend.Canceled)
	}
}

func testCanceledBeforeStartNeverExecutes(t *testing.T, b backend.Backend) {
	canceled := newOperation(now())
	probe := newOperation(now())
	mustCreate(t, b, canceled)
	mustCancel(t, b, canceled.ID, now())
	mustCreate(t, b, probe)

	calls := newExecutions()
	execute := func(ctx context.Context, id string) error {
		calls.record(id)
		return completeSucceeded(ctx, b, id)
	}
	if err := b.Start(t.Context(), execute); err != nil {
		t.Fatalf("Start: %v", err)
	}
	testwait.Recv(t, calls.called(probe.ID), "the execution of an operation created before Start")
	stopWithin(t, b, testwait.Timeout)

	if n := calls.count(canceled.ID); n != 0 {
		t.Errorf("execute was called %d times for an operation canceled before Start, want 0", n)
	}
}
