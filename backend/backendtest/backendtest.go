// Package backendtest is the conformance suite for implementations of
// [backend.Backend]. A backend is correct when [Run] passes against it, so
// every backend, in this module or another, runs it from one test:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T) backend.Backend {
//			b := mybackend.New(mybackend.Config{ /* a store of its own */ })
//			t.Cleanup(func() { _ = b.Stop(context.Background()) })
//			return b
//		})
//	}
//
// A backend that bounds the operations waiting to run also runs
// [RunBounded], whose factory is given the bounds to make it with.
//
// When the contract in package backend changes, this suite changes first.
package backendtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// Run checks that backends made by newBackend keep the contract of
// [backend.Backend]. Each rule is a subtest that calls newBackend once and
// runs in parallel with the others.
//
// newBackend must return a fresh, empty backend that has not been started,
// with a store of its own (a schema or a file per call for a database): the
// suite counts what Sweep deletes and what Start executes, so operations of
// another subtest must not be visible. It registers with t.Cleanup whatever
// releases the backend, normally a call to Stop; the suite may have called
// Stop already, or never called Start, so that Stop must accept both.
//
// Times given to the backend are truncated to microseconds, the precision of
// PostgreSQL and of the usual SQLite encodings, and compared with
// [time.Time.Equal]; byte slices are compared with [bytes.Equal], so nil and
// empty are the same.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	t.Helper()
	r := runner{newBackend: newBackend}

	t.Run("Create", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "RoundTripsEveryField", testCreateRoundTripsEveryField)
		r.rule(t, "GetUnknownIsNotFound", testGetUnknownIsNotFound)
		r.rule(t, "StoresCopies", testCreateStoresCopies)
		r.rule(t, "SameOwnerAndKeyReturnsExisting", testSameOwnerAndKeyReturnsExisting)
		r.rule(t, "SameKeyOtherOwnerCreates", testSameKeyOtherOwnerCreates)
		r.rule(t, "EmptyKeyNeverMatches", testEmptyKeyNeverMatches)
		r.rule(t, "KeyOfExpiredOperationCreates", testKeyOfExpiredOperationCreates)
		r.rule(t, "KeyOfCanceledOperationCreates", testKeyOfCanceledOperationCreates)
		r.rule(t, "ConcurrentSameKeyCreatesOne", testConcurrentSameKeyCreatesOne)
	})
	t.Run("MarkRunning", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "StartsFirstAttempt", testMarkRunningStartsFirstAttempt)
		r.rule(t, "RetryIncrementsAttempt", testMarkRunningRetryIncrementsAttempt)
		r.rule(t, "DoneIsFinished", testMarkRunningDoneIsFinished)
		r.rule(t, "UnknownIsNotFound", testMarkRunningUnknownIsNotFound)
	})
	t.Run("SetProgress", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "VisibleInGet", testSetProgressVisibleInGet)
		r.rule(t, "DoneIsFinished", testSetProgressDoneIsFinished)
	})
	t.Run("Complete", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "SucceededStoresResponse", testCompleteSucceededStoresResponse)
		r.rule(t, "FailedStoresFailure", testCompleteFailedStoresFailure)
		r.rule(t, "FirstCompletionWins", testCompleteFirstCompletionWins)
		r.rule(t, "ConcurrentCompletionsHaveOneWinner", testConcurrentCompletionsHaveOneWinner)
		r.rule(t, "CanceledStaysCanceled", testCompleteCanceledStaysCanceled)
	})
	t.Run("Cancel", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "MarksCanceled", testCancelMarksCanceled)
		r.rule(t, "ForgetsDoneOperations", testCancelForgetsDoneOperations)
		r.rule(t, "OfCanceledChangesNothing", testCancelOfCanceledChangesNothing)
		r.rule(t, "UnknownIsNotFound", testCancelUnknownIsNotFound)
		r.rule(t, "CancelsRunningExecutionOnce", testCancelCancelsRunningExecutionOnce)
		r.rule(t, "CanceledBeforeStartNeverExecutes", testCanceledBeforeStartNeverExecutes)
	})
	t.Run("MarkCollected", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "FirstCallWins", testMarkCollectedFirstCallWins)
		r.rule(t, "ConcurrentCallsHaveOneFirst", testMarkCollectedConcurrentCallsHaveOneFirst)
		r.rule(t, "WithoutResponseChangesNothing", testMarkCollectedWithoutResponseChangesNothing)
		r.rule(t, "UnknownIsNotFound", testMarkCollectedUnknownIsNotFound)
		r.rule(t, "CreateIgnoresCollectedAt", testCreateIgnoresCollectedAt)
	})
	t.Run("Sweep", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "DeletesExactlyTheExpired", testSweepDeletesExactlyTheExpired)
	})
	t.Run("Watch", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "WakesOnEveryChange", testWatchWakesOnEveryChange)
		r.rule(t, "StopEndsWatch", testWatchStopEndsWatch)
		r.rule(t, "NeverLosesFinalWakeUp", testWatchNeverLosesFinalWakeUp)
	})
	t.Run("Start", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "ExecutesEveryOperation", testStartExecutesEveryOperation)
		r.rule(t, "ExecutesConcurrently", testStartExecutesConcurrently)
		r.rule(t, "SecondStartFails", testSecondStartFails)
	})
	t.Run("Stop", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "WaitsForRunningExecutions", testStopWaitsForRunningExecutions)
		r.rule(t, "CancelsExecutionsWhenContextEnds", testStopCancelsExecutionsWhenContextEnds)
	})
}

type runner struct {
	newBackend func(t *testing.T) backend.Backend
}

// rule runs one rule as a parallel subtest with a backend of its own, so that
// no rule sees another's operations or executions.
func (r runner) rule(t *testing.T, name string, test func(t *testing.T, b backend.Backend)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		b := r.newBackend(t)
		if b == nil {
			t.Fatal("newBackend returned nil")
		}
		test(t, b)
	})
}

// ---- Create and Get ----

func testCreateRoundTripsEveryField(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	op.IdempotencyKey = "key-" + newID()

	stored, created, err := b.Create(t.Context(), cloneOperation(op))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if !created {
		t.Fatal("Create of a new operation returned created = false")
	}
	assertOperation(t, "operation returned by Create", stored, op)
	assertOperation(t, "operation returned by Get", mustGet(t, b, op.ID), op)
}

func testGetUnknownIsNotFound(t *testing.T, b backend.Backend) {
	_, err := b.Get(t.Context(), newID())
	requireErrorIs(t, err, backend.ErrNotFound, "Get of an unknown ID")
}

// A backend that keeps the caller's slices, or hands out its own, lets a
// caller's later change rewrite what is stored; a database never does, and
// the memory backend must not either.
func testCreateStoresCopies(t *testing.T, b backend.Backend) {
	op := newOperation(now())
	want := cloneOperation(op)
	mustCreate(t, b, op)

	op.Request[0] ^= 0xff
	op.Fingerprint[0] ^= 0xff
	op.Owner = "someone else"
	assertOperation(t, "Get after the caller changed the operation it created", mustGet(t, b, want.ID), want)

	// Get's byte slices may be shared (callers must not modify them, so that
	// polls need not copy stored responses), but the operation itself is the
	// caller's.
	got := mustGet(t, b, want.ID)
	got.Status = backend.Failed
	got.Owner = "someone else"
	assertOperation(t, "Get after the caller changed an operation it got", mustGet(t, b, want.ID), want)

	running := mustMarkRunning(t, b, want.ID, now())
	running.Request[0] ^= 0xff
	if got := mustGet(t, b, want.ID); !bytes.Equal(got.Request, want.Request) {
		t.Errorf("Request changed when the caller changed the one MarkRunning returned: %s", bytesDiff(got.Request, want.Request))
	}

	response := []byte("response")
	mustComplete(t, b, want.ID, backend.Outcome{Status: backend.Succeeded, Response: response, At: now()})
	response[0] = 'X'
	if got := mustGet(t, b, want.ID); string(got.Response) != "response" {
		t.Errorf("Response changed when the caller changed the slice it completed with: got %q, want %q", got.Response, "response")
	}
}

func testSameOwnerAndKeyReturnsExisting(t *testing.T, b backend.Backend) {
	first := newOperation(now())
	first.IdempotencyKey = "key-" + newID()
	mustCreate(t, b, cloneOperation(first))

	retry := newOperation(now())
	retry.Owner, retry.IdempotencyKey = first.Owner, first.IdempotencyKey
	stored, created, err := b.Create(t.Context(), retry)
	if err != nil {
		t.Fatalf("Create with a reused idempotency key: %v", err)
	}
	if created {
		t.Error("Create with the same owner and idempotency key returned created = true")
	}
	// The caller compares the existing operation's fingerprint with the new
	// request's to tell a retry from a different request (422), so the
	// existing operation must come back whole.
	assertOperation(t, "operation returned for a reused idempotency key", stored, first)

	_, err = b.Get(t.Context(), retry.ID)
	requireErrorIs(t, err, backend.ErrNotFound, "Get of the ID whose Create returned an existing operation")
	assertOperation(t, "existing operation after its key was reused", mustGet(t, b, first.ID), first)
}

func testSameKeyOtherOwnerCreates(t *testing.T, b backend.Backend) {
	first := newOperation(now())
	first.IdempotencyKey = "key-" + newID()
	mustCreate(t, b, first)

	other := newOperation(now())
	other.IdempotencyKey = first.IdempotencyKey
	stored := mustCreate(t, b, other)
	if stored.ID != other.ID {
		t.Errorf("Create with another owner's idempotency key returned operation %q, want the new %q", stored.ID, other.ID)
	}
	mustGet(t, b, first.ID)
}

func testEmptyKeyNeverMatches(t *testing.T, b backend.Backend) {
	first := newOperation(now())
	mustCreate(t, b, first)

	second := newOperation(now())
	second.Owner = first.Owner
	if stored := mustCreate(t, b, second); stored.ID != second.ID {
		t.Errorf("second Create without an idempotency key returned operation %q, want the new %q", stored.ID, second.ID)
	}
}

// Expiry is judged at the new operation's CreatedAt: an operation whose
// ExpiresAt is not after it no longer holds the key, even before a sweep.
func testKeyOfExpiredOperationCreates(t *testing.T, b backend.Backend) {
	t0 := now()
	first := newOperation(t0)
	first.IdempotencyKey = "key-" + newID()
	mustCreate(t, b, first)
	mustMarkRunning(t, b, first.ID, t0.Add(time.Second))
	mustComplete(t, b, first.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("first"), At: t0.Add(time.Minute)})
	expiresAt := t0.Add(time.Minute).Add(first.Retention)

	createWithKey := func(at time.Time) (*backend.Operation, *backend.Operation, bool) {
		t.Helper()
		op := newOperation(at)
		op.Owner, op.IdempotencyKey = first.Owner, first.IdempotencyKey
		stored, created, err := b.Create(t.Context(), op)
		if err != nil {
			t.Fatalf("Create at %v with the key of an operation expiring at %v: %v", at, expiresAt, err)
		}
		return op, stored, created
	}

	if _, stored, created := createWithKey(expiresAt.Add(-time.Microsecond)); created || stored.ID != first.ID {
		t.Errorf("Create 1µs before the holder of the key expires: got operation %q created %v, want the existing %q created false", stored.ID, created, first.ID)
	}

	second, stored, created := createWithKey(expiresAt)
	if !created || stored.ID != second.ID {
		t.Fatalf("Create when the holder of the key has expired (ExpiresAt == CreatedAt): got operation %q created %v, want the new %q created true", stored.ID, created, second.ID)
	}

	// The new operation now holds the key.
	if _, stored, created := createWithKey(expiresAt.Add(time.Second)); created || stored.ID != second.ID {
		t.Errorf("Create after the key passed to a new operation: got operation %q created %v, want %q created false", stored.ID, created, second.ID)
	}
}

// A client that deleted an operation and retries with the same key wants a
// new operation, not the tombstone of the one it deleted.
func testKeyOfCanceledOperationCreates(t *testing.T, b backend.Backend) {
	first := newOperation(now())
	first.IdempotencyKey = "key-" + newID()
	mustCreate(t, b, first)
	mustCancel(t, b, first.ID, now())

	retry := newOperation(now())
	retry.Owner, retry.IdempotencyKey = first.Owner, first.IdempotencyKey
	stored, created, err := b.Create(t.Context(), retry)
	if err != nil {
		t.Fatalf("Create with the key of a canceled operation: %v", err)
	}
	if !created || stored.ID != retry.ID {
		t.Fatalf("Create with the key of a canceled, unexpired operation: got operation %q created %v, want the new %q created true", stored.ID, created, retry.ID)
	}

	// The new operation now holds the key.
	again := newOperation(now())
	again.Owner, again.IdempotencyKey = first.Owner, first.IdempotencyKey
	stored, created, err = b.Create(t.Context(), again)
	if err != nil {
		t.Fatalf("Create with the key of a live operation: %v", err)
	}
	if created || stored.ID != retry.ID {
		t.Errorf("Create after the key passed to a new operation: got operation %q created %v, want %q created false", stored.ID, created, retry.ID)
	}
}

func testConcurrentSameKeyCreatesOne(t *testing.T, b backend.Backend) {
	const n = 16
	at := now()
	owner, key := "owner-"+newID(), "key-"+newID()
	candidates := make([]*backend.Operation, n)
	for i := range candidates {
		candidates[i] = newOperation(at)
		candidates[i].Owner, candidates[i].IdempotencyKey = owner, key
	}

	type result struct {
		id      string
		created bool
		err     error
	}
	results := make([]result, n)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i, op := range candidates {
		wg.Go(func() {
			<-begin // release all Creates together to make them race
			stored, created, err := b.Create(t.Context(), op)
			if err == nil {
				results[i] = result{id: stored.ID, created: created}
			} else {
				results[i] = result{err: err}
			}
		})
	}
	close(begin)
	wg.Wait()

	winner := ""
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("concurrent Create %d: %v", i, r.err)
		}
		if r.created {
			if winner != "" {
				t.Fatalf("two concurrent Creates with the same owner and key both created: %q and %q", winner, r.id)
			}
			winner = r.id
		}
	}
	if winner == "" {
		t.Fatal("none of the concurrent Creates with the same owner and key created the operation")
	}
	for i, r := range results {
		if r.id != winner {
			t.Errorf("concurrent Create %d returned operation %q, want the created %q", i, r.id, winner)
		}
	}
	for _, op := range candidates {
		if op.ID == winner {
			continue
		}
		_, err := b.Get(t.Context(), op.ID)
		requireErrorIs(t, err, backend.ErrNotFound, "Get of a losing concurrent Create's ID")
	}
}

// ---- MarkRunning ----

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

// ---- SetProgress ----

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

// ---- Complete ----

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

// ---- Cancel ----

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

// ---- MarkCollected ----

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

// ---- Sweep ----

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

// ---- Watch ----

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

// ---- helpers: operations ----

// newID returns a random 128-bit ID, base64url as the middleware makes them,
// so that tests sharing a store never collide.
func newID() string {
	id := make([]byte, 16)
	rand.Read(id)
	return base64.RawURLEncoding.EncodeToString(id)
}

// randomBytes returns n random bytes starting with a NUL and an invalid UTF-8
// byte, so that a store that treats the bytes as text fails.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	b[0], b[1] = 0x00, 0xff
	return b
}

// now returns the current time at the microsecond precision databases keep,
// so that times round-trip exactly.
func now() time.Time {
	return time.Now().Truncate(time.Microsecond)
}

// newOperation returns an operation as the middleware creates it, with every
// field that Create stores set to a distinctive value.
func newOperation(createdAt time.Time) *backend.Operation {
	return &backend.Operation{
		ID:          newID(),
		Owner:       "owner-" + newID(),
		Fingerprint: randomBytes(32),
		Status:      backend.NotStarted,
		Request:     randomBytes(512),
		Timeout:     90*time.Second + 250*time.Millisecond,
		Retention:   36*time.Hour + 30*time.Minute,
		CreatedAt:   createdAt,
		UpdatedAt:   createdAt,
	}
}

// cloneOperation copies op deeply, so that a kept expectation cannot change
// with the operation handed to the backend.
func cloneOperation(op *backend.Operation) *backend.Operation {
	c := *op
	c.Fingerprint = bytes.Clone(op.Fingerprint)
	c.Request = bytes.Clone(op.Request)
	c.Response = bytes.Clone(op.Response)
	if op.Failure != nil {
		f := *op.Failure
		c.Failure = &f
	}
	return &c
}

// finished is an operation brought to a done status, as Get returned it then.
type finished struct {
	what string
	op   *backend.Operation
}

// finishedOperations returns one operation for each way of becoming done, so
// that the rules about done operations are checked against all of them.
func finishedOperations(t *testing.T, b backend.Backend) []finished {
	t.Helper()
	finish := func(what string, run bool, end func(id string)) finished {
		op := newOperation(now())
		mustCreate(t, b, op)
		if run {
			mustMarkRunning(t, b, op.ID, now())
			mustSetProgress(t, b, op.ID, backend.Progress{Percent: 60, Message: "last progress"})
		}
		end(op.ID)
		return finished{what: what, op: mustGet(t, b, op.ID)}
	}
	return []finished{
		finish("a succeeded operation", true, func(id string) {
			mustComplete(t, b, id, backend.Outcome{Status: backend.Succeeded, Response: []byte("first response"), At: now()})
		}),
		finish("a failed operation", true, func(id string) {
			mustComplete(t, b, id, backend.Outcome{Status: backend.Failed, Failure: &backend.Failure{Status: 500, Title: "Internal Server Error", Detail: "first failure"}, At: now()})
		}),
		finish("an operation canceled while running", true, func(id string) { mustCancel(t, b, id, now()) }),
		finish("an operation canceled before it ran", false, func(id string) { mustCancel(t, b, id, now()) }),
	}
}

// ---- helpers: calls that must succeed ----

func mustCreate(t *testing.T, b backend.Backend, op *backend.Operation) *backend.Operation {
	t.Helper()
	stored, created, err := b.Create(t.Context(), op)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if !created {
		t.Fatalf("Create of new operation %q returned created = false", op.ID)
	}
	return stored
}

func mustGet(t *testing.T, b backend.Backend, id string) *backend.Operation {
	t.Helper()
	op, err := b.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%q): %v", id, err)
	}
	return op
}

func mustMarkRunning(t *testing.T, b backend.Backend, id string, at time.Time) *backend.Operation {
	t.Helper()
	op, err := b.MarkRunning(t.Context(), id, at)
	if err != nil {
		t.Fatalf("MarkRunning(%q): %v", id, err)
	}
	return op
}

func mustSetProgress(t *testing.T, b backend.Backend, id string, progress backend.Progress) {
	t.Helper()
	if err := b.SetProgress(t.Context(), id, progress, now()); err != nil {
		t.Fatalf("SetProgress(%q): %v", id, err)
	}
}

func mustComplete(t *testing.T, b backend.Backend, id string, outcome backend.Outcome) {
	t.Helper()
	won, err := b.Complete(t.Context(), id, outcome)
	if err != nil {
		t.Fatalf("Complete(%q, %s): %v", id, outcome.Status, err)
	}
	if !won {
		t.Fatalf("first Complete(%q, %s) returned won = false", id, outcome.Status)
	}
}

func mustCancel(t *testing.T, b backend.Backend, id string, at time.Time) {
	t.Helper()
	if err := b.Cancel(t.Context(), id, at); err != nil {
		t.Fatalf("Cancel(%q): %v", id, err)
	}
}

// ---- helpers: assertions ----

func requireErrorIs(t *testing.T, err, target error, call string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s returned error %v, want one matching %v", call, err, target)
	}
}

// assertOperation compares every field of got with want, reporting each
// difference, so that one run shows everything a backend loses.
func assertOperation(t *testing.T, what string, got, want *backend.Operation) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: nil operation", what)
		return
	}
	diff := func(field string, g, w any) { t.Errorf("%s: %s = %v, want %v", what, field, g, w) }
	if got.ID != want.ID {
		diff("ID", got.ID, want.ID)
	}
	if got.Owner != want.Owner {
		diff("Owner", got.Owner, want.Owner)
	}
	if got.IdempotencyKey != want.IdempotencyKey {
		diff("IdempotencyKey", got.IdempotencyKey, want.IdempotencyKey)
	}
	if !bytes.Equal(got.Fingerprint, want.Fingerprint) {
		t.Errorf("%s: Fingerprint %s", what, bytesDiff(got.Fingerprint, want.Fingerprint))
	}
	if got.Status != want.Status {
		diff("Status", got.Status, want.Status)
	}
	if got.Progress != want.Progress {
		diff("Progress", got.Progress, want.Progress)
	}
	if got.Attempt != want.Attempt {
		diff("Attempt", got.Attempt, want.Attempt)
	}
	if !bytes.Equal(got.Request, want.Request) {
		t.Errorf("%s: Request %s", what, bytesDiff(got.Request, want.Request))
	}
	if !bytes.Equal(got.Response, want.Response) {
		t.Errorf("%s: Response %s", what, bytesDiff(got.Response, want.Response))
	}
	if !sameFailure(got.Failure, want.Failure) {
		diff("Failure", describeFailure(got.Failure), describeFailure(want.Failure))
	}
	if got.Timeout != want.Timeout {
		diff("Timeout", got.Timeout, want.Timeout)
	}
	if got.Retention != want.Retention {
		diff("Retention", got.Retention, want.Retention)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		diff("CreatedAt", got.CreatedAt, want.CreatedAt)
	}
	if !got.UpdatedAt.Equal(want.UpdatedAt) {
		diff("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	}
	if !got.ExpiresAt.Equal(want.ExpiresAt) {
		diff("ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	}
	if !got.CollectedAt.Equal(want.CollectedAt) {
		diff("CollectedAt", got.CollectedAt, want.CollectedAt)
	}
}

// assertDone checks what every done operation shows: its status, its expiry,
// and that the recorded request, which holds credentials, is gone.
func assertDone(t *testing.T, what string, got *backend.Operation, status backend.Status, expiresAt time.Time) {
	t.Helper()
	if got.Status != status {
		t.Errorf("%s: Status = %q, want %q", what, got.Status, status)
	}
	if !got.ExpiresAt.Equal(expiresAt) {
		t.Errorf("%s: ExpiresAt = %v, want %v (when it finished plus Retention)", what, got.ExpiresAt, expiresAt)
	}
	if len(got.Request) != 0 {
		t.Errorf("%s: Request still holds %d bytes after the operation became %s; it must be dropped", what, len(got.Request), got.Status)
	}
}

// bytesDiff says where got first differs from want, without printing
// hundreds of bytes.
func bytesDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	window := func(b []byte) []byte { return b[i:min(len(b), i+8)] }
	return fmt.Sprintf("differs at byte %d: got %d bytes (…%x…), want %d bytes (…%x…)", i, len(got), window(got), len(want), window(want))
}

func sameFailure(a, b *backend.Failure) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func describeFailure(f *backend.Failure) string {
	if f == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%+v", *f)
}

// ---- helpers: execution and waiting ----

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

// drain discards a pending value, if any.
func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}
