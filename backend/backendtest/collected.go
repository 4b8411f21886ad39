package backendtest

import (
	"sync"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// succeededOperation creates an operation and completes it with a response.
func succeededOperation(t *testing.T, b backend.Backend) *backend.Operation {
	t.Helper()
	op := newOperation(now())
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())
	mustComplete(t, b, op.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("response with Set-Cookie"), At: now()})
	return mustGet(t, b, op.ID)
}

// The stored response's Set-Cookie goes to the first reader only, so that a
// user who logs out is not logged back in by reading the response again:
// the first call must say so, and the mark must last.
func testMarkCollectedFirstCallWins(t *testing.T, b backend.Backend) {
	op := succeededOperation(t, b)
	if !op.CollectedAt.IsZero() {
		t.Fatalf("CollectedAt = %v before any MarkCollected, want zero", op.CollectedAt)
	}

	collectedAt := now().Add(time.Minute)
	first, err := b.MarkCollected(t.Context(), op.ID, collectedAt)
	if err != nil {
		t.Fatalf("first MarkCollected: %v", err)
	}
	if !first {
		t.Fatal("first MarkCollected of a succeeded operation returned first = false")
	}
	want := cloneOperation(op)
	want.CollectedAt = collectedAt
	// Reading a response is no change to the operation: UpdatedAt, which
	// pollers and event streams compare, stays.
	assertOperation(t, "Get after MarkCollected", mustGet(t, b, op.ID), want)

	again, err := b.MarkCollected(t.Context(), op.ID, collectedAt.Add(time.Minute))
	if err != nil {
		t.Fatalf("second MarkCollected: %v", err)
	}
	if again {
		t.Error("second MarkCollected returned first = true; the response was collected already")
	}
	assertOperation(t, "Get after a second MarkCollected", mustGet(t, b, op.ID), want)
}

func testMarkCollectedConcurrentCallsHaveOneFirst(t *testing.T, b backend.Backend) {
	const n = 16
	op := succeededOperation(t, b)

	firsts := make([]bool, n)
	errs := make([]error, n)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-begin
			firsts[i], errs[i] = b.MarkCollected(t.Context(), op.ID, now())
		})
	}
	close(begin)
	wg.Wait()

	winner := -1
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("concurrent MarkCollected %d: %v", i, errs[i])
		}
		if firsts[i] {
			if winner >= 0 {
				t.Fatalf("concurrent MarkCollected %d and %d were both first: the response's cookies would be delivered twice", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("none of the concurrent MarkCollected calls was first")
	}
	if got := mustGet(t, b, op.ID); got.CollectedAt.IsZero() {
		t.Error("CollectedAt is zero after concurrent MarkCollected calls")
	}
}

// An operation without a stored response has nothing to collect; a call
// made too early must not use up the collection of the response to come.
func testMarkCollectedWithoutResponseChangesNothing(t *testing.T, b backend.Backend) {
	notStarted := newOperation(now())
	mustCreate(t, b, notStarted)
	running := newOperation(now())
	mustCreate(t, b, running)
	mustMarkRunning(t, b, running.ID, now())
	cases := []finished{
		{what: "an operation not started", op: mustGet(t, b, notStarted.ID)},
		{what: "a running operation", op: mustGet(t, b, running.ID)},
	}
	for _, done := range finishedOperations(t, b) {
		if done.op.Status != backend.Succeeded {
			cases = append(cases, done)
		}
	}
	for _, c := range cases {
		first, err := b.MarkCollected(t.Context(), c.op.ID, now())
		if err != nil {
			t.Errorf("MarkCollected of %s: %v, want first = false and no error", c.what, err)
		}
		if first {
			t.Errorf("MarkCollected of %s returned first = true; it has no response to collect", c.what)
		}
		assertOperation(t, c.what+" after MarkCollected", mustGet(t, b, c.op.ID), c.op)
	}

	mustComplete(t, b, running.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("late response"), At: now()})
	first, err := b.MarkCollected(t.Context(), running.ID, now())
	if err != nil || !first {
		t.Errorf("MarkCollected once the operation succeeded = %v, %v; want first = true: the early call must not count", first, err)
	}
}

func testMarkCollectedUnknownIsNotFound(t *testing.T, b backend.Backend) {
	_, err := b.MarkCollected(t.Context(), newID(), now())
	requireErrorIs(t, err, backend.ErrNotFound, "MarkCollected of an unknown ID")
}

func testCreateIgnoresCollectedAt(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	want := cloneOperation(op)
	op.CollectedAt = now()
	assertOperation(t, "operation returned by Create given a CollectedAt", mustCreate(t, b, op), want)
	assertOperation(t, "Get of an operation created with a CollectedAt", mustGet(t, b, op.ID), want)
}
