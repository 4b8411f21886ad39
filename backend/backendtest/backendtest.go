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
// The rules of the optional [backend.Lister], [backend.ChangeLister] and
// [backend.Notifier] run inside Run, and are skipped when the backend does
// not implement them.
//
// When the contract in package backend changes, this suite changes first.
package backendtest

import (
	"testing"

	"github.com/asyncreply/asyncreply/backend"
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
	t.Run("List", func(t *testing.T) {
		t.Parallel()
		r.listerRule(t, "PagesEachOperationOnceNewestFirst", testListPagesEachOperationOnceNewestFirst)
		r.listerRule(t, "DefaultPageSize", testListDefaultPageSize)
		r.listerRule(t, "CreatesDuringPagingAppearOnlyOnAFreshListing", testListCreatesDuringPagingAppearOnlyOnAFreshListing)
		r.listerRule(t, "SweepBetweenPagesKeepsTheToken", testListSweepBetweenPagesKeepsTheToken)
		r.listerRule(t, "OwnerIsolation", testListOwnerIsolation)
		r.listerRule(t, "FiltersByStatusAndCreationTime", testListFiltersByStatusAndCreationTime)
		r.listerRule(t, "LeavesOutExpiredAndCanceled", testListLeavesOutExpiredAndCanceled)
		r.listerRule(t, "CountByStatus", testCountByStatus)
		r.listerRule(t, "BadPageTokenIsRefused", testListBadPageTokenIsRefused)
	})
	t.Run("Changes", func(t *testing.T) {
		t.Parallel()
		r.changesRule(t, "InOrderPagedByCursor", testChangesInOrderPagedByCursor)
		r.changesRule(t, "ShowTheLastChangeOnly", testChangesShowTheLastChangeOnly)
		r.changesRule(t, "OwnerIsolation", testChangesOwnerIsolation)
		r.changesRule(t, "IncludeCanceledNotExpired", testChangesIncludeCanceledNotExpired)
		r.changesRule(t, "DefaultLimit", testChangesDefaultLimit)
		r.changesRule(t, "BadCursorIsRefused", testChangesBadCursorIsRefused)
	})
	t.Run("Deliveries", func(t *testing.T) {
		t.Parallel()
		r.notifierRule(t, "TargetsRoundTrip", testTargetsRoundTrip)
		r.notifierRule(t, "UnknownIsNotFound", testDeliveriesUnknownIsNotFound)
		r.notifierRule(t, "CompleteDeliversEachTargetOnce", testCompleteDeliversEachTargetOnce)
		r.notifierRule(t, "CancelDeliversCanceled", testCancelDeliversCanceled)
		r.notifierRule(t, "FailedAttemptIsRetried", testFailedAttemptIsRetried)
		r.notifierRule(t, "GivingUpIsRecorded", testGivingUpIsRecorded)
		r.notifierRule(t, "NoTargetsNoDeliveries", testNoTargetsNoDeliveries)
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
