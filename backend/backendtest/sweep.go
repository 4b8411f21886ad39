package backendtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

func testSweepDeletesExactlyTheExpired(t *testing.T, b backend.Backend) {
	// Times a day ahead keep every expiry in the future for any background
	// sweeping the backend does with the real clock: only the Sweep below
	// may delete these operations.
	sweepAt := now().Add(24 * time.Hour)
	const retention = time.Hour

	create := func(status backend.Status, finishedAt time.Time) *backend.Operation {
		t.Helper()
		op := newOperation(sweepAt.Add(-3 * retention))
		op.Retention = retention
		mustCreate(t, b, op)
		if status == backend.NotStarted {
			return op
		}
		mustMarkRunning(t, b, op.ID, op.CreatedAt)
		switch status {
		case backend.Succeeded:
			mustComplete(t, b, op.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: finishedAt})
		case backend.Failed:
			mustComplete(t, b, op.ID, backend.Outcome{Status: backend.Failed, Failure: &backend.Failure{Status: 500, Title: "Internal Server Error"}, At: finishedAt})
		case backend.Canceled:
			mustCancel(t, b, op.ID, finishedAt)
		}
		return op
	}
	swept := []*backend.Operation{
		create(backend.Succeeded, sweepAt.Add(-2*retention)),             // expired an hour ago
		create(backend.Succeeded, sweepAt.Add(-retention)),               // expires exactly at sweepAt
		create(backend.Failed, sweepAt.Add(-retention-time.Microsecond)), // expired 1µs ago
		create(backend.Canceled, sweepAt.Add(-retention)),                // tombstone expiring at sweepAt
	}
	kept := []*backend.Operation{
		create(backend.Succeeded, sweepAt.Add(-retention+time.Microsecond)), // expires 1µs later
		create(backend.Canceled, sweepAt),                                   // tombstone expiring an hour later
		create(backend.NotStarted, time.Time{}),                             // not done, however old
		create(backend.Running, time.Time{}),                                // not done, however old
	}

	n, err := b.Sweep(t.Context(), sweepAt)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if n != len(swept) {
		t.Errorf("Sweep returned %d, want %d", n, len(swept))
	}
	for _, op := range swept {
		_, err := b.Get(t.Context(), op.ID)
		requireErrorIs(t, err, backend.ErrNotFound, fmt.Sprintf("Get of an operation that expired at or before the sweep (created %v)", op.CreatedAt))
	}
	for _, op := range kept {
		if _, err := b.Get(t.Context(), op.ID); err != nil {
			t.Errorf("Get of an operation Sweep must keep: %v", err)
		}
	}

	if n, err := b.Sweep(t.Context(), sweepAt); err != nil || n != 0 {
		t.Errorf("second Sweep at the same time = %d, %v; want 0, nil", n, err)
	}
}
