package backendtest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

func testCompleteSucceededStoresResponse(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())

	outcome := backend.Outcome{Status: backend.Succeeded, Response: randomBytes(256), At: now()}
	mustComplete(t, b, op.ID, outcome)

	got := mustGet(t, b, op.ID)
	assertDone(t, "Get after Complete(Succeeded)", got, backend.Succeeded, outcome.At.Add(op.Retention))
	if !bytes.Equal(got.Response, outcome.Response) {
		t.Errorf("Response %s", bytesDiff(got.Response, outcome.Response))
	}
	if got.Failure != nil {
		t.Errorf("Failure = %+v on a succeeded operation, want nil", *got.Failure)
	}
}

func testCompleteFailedStoresFailure(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())

	failure := backend.Failure{Status: 504, Title: "Gateway Timeout", Detail: "The operation ran longer than its 90 s timeout."}
	outcome := backend.Outcome{Status: backend.Failed, Failure: &failure, At: now()}
	mustComplete(t, b, op.ID, outcome)

	got := mustGet(t, b, op.ID)
	assertDone(t, "Get after Complete(Failed)", got, backend.Failed, outcome.At.Add(op.Retention))
	if got.Failure == nil || *got.Failure != failure {
		t.Errorf("Failure = %s, want %+v", describeFailure(got.Failure), failure)
	}
	if len(got.Response) != 0 {
		t.Errorf("Response = %x on a failed operation, want none", got.Response)
	}
}

// At-least-once execution means a second attempt can finish after the first;
// whatever it brings, the first completed attempt's outcome stays.
func testCompleteFirstCompletionWins(t *testing.T, b backend.Backend) {
	lateOutcomes := []backend.Outcome{
		{Status: backend.Succeeded, Response: []byte("late response"), At: now().Add(time.Hour)},
		{Status: backend.Failed, Failure: &backend.Failure{Status: 502, Title: "Bad Gateway", Detail: "late"}, At: now().Add(time.Hour)},
	}
	for _, done := range finishedOperations(t, b) {
		for _, late := range lateOutcomes {
			won, err := b.Complete(t.Context(), done.op.ID, late)
			if err != nil {
				t.Errorf("Complete(%s) of %s: %v, want won = false and no error", late.Status, done.what, err)
			}
			if won {
				t.Errorf("Complete(%s) of %s returned won = true", late.Status, done.what)
			}
			assertOperation(t, fmt.Sprintf("%s after a late Complete(%s)", done.what, late.Status), mustGet(t, b, done.op.ID), done.op)
		}
	}
}

func testConcurrentCompletionsHaveOneWinner(t *testing.T, b backend.Backend) {
	const n = 16
	op := newOperation(now())
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())

	won := make([]bool, n)
	errs := make([]error, n)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-begin
			outcome := backend.Outcome{Status: backend.Succeeded, Response: fmt.Appendf(nil, "attempt %d", i), At: now()}
			won[i], errs[i] = b.Complete(t.Context(), op.ID, outcome)
		})
	}
	close(begin)
	wg.Wait()

	winner := -1
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("concurrent Complete %d: %v", i, errs[i])
		}
		if won[i] {
			if winner >= 0 {
				t.Fatalf("concurrent Completes %d and %d both won", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("none of the concurrent Completes won")
	}
	if got, want := string(mustGet(t, b, op.ID).Response), fmt.Sprintf("attempt %d", winner); got != want {
		t.Errorf("Response = %q, want the winner's %q", got, want)
	}
}

func testCompleteCanceledStaysCanceled(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())
	canceledAt := now()
	mustCancel(t, b, op.ID, canceledAt)

	// The worker did not see the cancellation in time and finishes anyway.
	won, err := b.Complete(t.Context(), op.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("too late"), At: now().Add(time.Minute)})
	if err != nil {
		t.Errorf("Complete of a canceled operation: %v, want won = false and no error", err)
	}
	if won {
		t.Error("Complete of a canceled operation returned won = true")
	}
	got := mustGet(t, b, op.ID)
	assertDone(t, "Get after a late Complete of a canceled operation", got, backend.Canceled, canceledAt.Add(op.Retention))
	if len(got.Response) != 0 || got.Failure != nil {
		t.Errorf("canceled operation got Response %q and Failure %s from a late Complete", got.Response, describeFailure(got.Failure))
	}
}
