package backendtest

import (
	"testing"

	"github.com/asyncreply/asyncreply/backend"
)

func testSetProgressVisibleInGet(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())

	for _, progress := range []backend.Progress{
		{Percent: 40, Message: "querying warehouse"},
		{Percent: 80, Message: "rendering — ünïcode"},
	} {
		if err := b.SetProgress(t.Context(), op.ID, progress, now()); err != nil {
			t.Fatalf("SetProgress(%+v): %v", progress, err)
		}
		if got := mustGet(t, b, op.ID); got.Progress != progress {
			t.Errorf("Get after SetProgress(%+v): progress %+v", progress, got.Progress)
		}
	}
}

func testSetProgressDoneIsFinished(t *testing.T, b backend.Backend) {
	for _, done := range finishedOperations(t, b) {
		err := b.SetProgress(t.Context(), done.op.ID, backend.Progress{Percent: 99, Message: "too late"}, now())
		requireErrorIs(t, err, backend.ErrFinished, "SetProgress of "+done.what)
		assertOperation(t, done.what+" after SetProgress", mustGet(t, b, done.op.ID), done.op)
	}
}
