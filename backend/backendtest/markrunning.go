package backendtest

import (
	"bytes"
	"testing"

	"github.com/asyncreply/asyncreply/backend"
)

func testMarkRunningStartsFirstAttempt(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	mustCreate(t, b, op)

	running := mustMarkRunning(t, b, op.ID, now())
	if running.Status != backend.Running || running.Attempt != 1 {
		t.Errorf("MarkRunning returned status %q attempt %d, want %q attempt 1", running.Status, running.Attempt, backend.Running)
	}
	if !bytes.Equal(running.Request, op.Request) {
		t.Errorf("MarkRunning returned a Request other than the recorded one: %s", bytesDiff(running.Request, op.Request))
	}
	got := mustGet(t, b, op.ID)
	if got.Status != backend.Running || got.Attempt != 1 {
		t.Errorf("Get after MarkRunning: status %q attempt %d, want %q attempt 1", got.Status, got.Attempt, backend.Running)
	}
}

func testMarkRunningRetryIncrementsAttempt(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())

	retry := mustMarkRunning(t, b, op.ID, now())
	if retry.Status != backend.Running || retry.Attempt != 2 {
		t.Errorf("second MarkRunning returned status %q attempt %d, want %q attempt 2", retry.Status, retry.Attempt, backend.Running)
	}
	if !bytes.Equal(retry.Request, op.Request) {
		t.Errorf("second MarkRunning returned a Request other than the recorded one, which a retry needs: %s", bytesDiff(retry.Request, op.Request))
	}
	if got := mustGet(t, b, op.ID); got.Attempt != 2 {
		t.Errorf("Get after two MarkRunning: attempt %d, want 2", got.Attempt)
	}
}

func testMarkRunningDoneIsFinished(t *testing.T, b backend.Backend) {
	for _, done := range finishedOperations(t, b) {
		_, err := b.MarkRunning(t.Context(), done.op.ID, now())
		requireErrorIs(t, err, backend.ErrFinished, "MarkRunning of "+done.what)
		assertOperation(t, done.what+" after MarkRunning", mustGet(t, b, done.op.ID), done.op)
	}
}

func testMarkRunningUnknownIsNotFound(t *testing.T, b backend.Backend) {
	_, err := b.MarkRunning(t.Context(), newID(), now())
	requireErrorIs(t, err, backend.ErrNotFound, "MarkRunning of an unknown ID")
}
