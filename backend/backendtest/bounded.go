package backendtest

import (
	"errors"
	"sync"
	"testing"

	"github.com/asyncreply/asyncreply/backend"
)

// Bounds are the bounds on the operations waiting to run (NotStarted) that
// [RunBounded] asks a backend to be made with. A zero field sets no bound,
// whatever the backend's own default.
type Bounds struct {
	// MaxQueued bounds the operations waiting to run, in total.
	MaxQueued int
	// MaxQueuedPerOwner bounds those of one owner; operations without an
	// owner count only towards MaxQueued.
	MaxQueuedPerOwner int
}

// RunBounded checks that backends made by newBackend with the bounds asked
// for keep the admission contract of [backend.Backend.Create]: past a
// bound, Create returns [backend.ErrQueueFull] or [backend.ErrOwnerQueueFull]
// and stores nothing; an operation that leaves NotStarted frees its place;
// an idempotent retry is never refused; and Creates racing for the last
// places never pass a bound, nor fail because a batch-mate was refused.
// Backends that bound what waits run it beside [Run].
//
// newBackend must return a fresh, empty backend that has not been started,
// as for Run, bounded as bounds says and otherwise unbounded: the rules
// count every operation they create.
func RunBounded(t *testing.T, newBackend func(t *testing.T, bounds Bounds) backend.Backend) {
	t.Helper()
	r := boundedRunner{newBackend: newBackend}
	t.Run("Admission", func(t *testing.T) {
		t.Parallel()
		r.rule(t, "RefusesPastTheTotal", Bounds{MaxQueued: 3}, testRefusesPastTheTotal)
		r.rule(t, "LeavingNotStartedFreesAPlace", Bounds{MaxQueued: 1}, testLeavingNotStartedFreesAPlace)
		r.rule(t, "RefusesPastAnOwnersBound", Bounds{MaxQueuedPerOwner: 2}, testRefusesPastAnOwnersBound)
		r.rule(t, "IdempotentRetryIsNeverRefused", Bounds{MaxQueued: 1, MaxQueuedPerOwner: 1}, testIdempotentRetryIsNeverRefused)
		r.rule(t, "ConcurrentCreatesStopAtTheTotal", Bounds{MaxQueued: 5}, testConcurrentCreatesStopAtTheTotal)
		r.rule(t, "ConcurrentCreatesStopAtEachOwnersBound", Bounds{MaxQueuedPerOwner: 3}, testConcurrentCreatesStopAtEachOwnersBound)
	})
}

type boundedRunner struct {
	newBackend func(t *testing.T, bounds Bounds) backend.Backend
}

// rule runs one rule as a parallel subtest with a backend of its own.
func (r boundedRunner) rule(t *testing.T, name string, bounds Bounds, test func(t *testing.T, b backend.Backend)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		b := r.newBackend(t, bounds)
		if b == nil {
			t.Fatal("newBackend returned nil")
		}
		test(t, b)
	})
}

func testRefusesPastTheTotal(t *testing.T, b backend.Backend) {
	for range 3 {
		mustCreate(t, b, newOperation(now()))
	}
	mustRefuse(t, b, newOperation(now()), backend.ErrQueueFull, "a fourth operation with three waiting and a bound of three")
}

// Only operations waiting to run count: one taken by a worker, or
// canceled, makes room for another.
func testLeavingNotStartedFreesAPlace(t *testing.T, b backend.Backend) {
	first := mustCreate(t, b, newOperation(now()))
	mustRefuse(t, b, newOperation(now()), backend.ErrQueueFull, "a second operation with a bound of one")

	mustMarkRunning(t, b, first.ID, now())
	second := mustCreate(t, b, newOperation(now()))
	mustRefuse(t, b, newOperation(now()), backend.ErrQueueFull, "an operation with the second waiting")

	mustCancel(t, b, second.ID, now())
	mustCreate(t, b, newOperation(now()))
}

func testRefusesPastAnOwnersBound(t *testing.T, b backend.Backend) {
	busy := newOperation(now()).Owner
	for range 2 {
		op := newOperation(now())
		op.Owner = busy
		mustCreate(t, b, op)
	}
	third := newOperation(now())
	third.Owner = busy
	err := mustRefuse(t, b, third, backend.ErrOwnerQueueFull, "an owner's third operation with a bound of two per owner")
	if errors.Is(err, backend.ErrQueueFull) {
		t.Errorf("the refusal of one owner's operation, %v, also matches ErrQueueFull: only that owner is over its bound", err)
	}

	mustCreate(t, b, newOperation(now())) // another owner
	for range 3 {
		ownerless := newOperation(now())
		ownerless.Owner = ""
		mustCreate(t, b, ownerless)
	}
}

// A retry stores nothing new, so no bound applies to it, even when the
// operation it finds is what fills the queue.
func testIdempotentRetryIsNeverRefused(t *testing.T, b backend.Backend) {
	first := newOperation(now())
	first.IdempotencyKey = "key-" + newID()
	mustCreate(t, b, cloneOperation(first))

	retry := newOperation(now())
	retry.Owner, retry.IdempotencyKey = first.Owner, first.IdempotencyKey
	stored, created, err := b.Create(t.Context(), retry)
	if err != nil {
		t.Fatalf("Create of an idempotent retry with the queue full: %v; a retry stores nothing and must never be refused", err)
	}
	if created || stored.ID != first.ID {
		t.Errorf("Create of an idempotent retry returned operation %q with created = %v, want the first, %q, with created = false", stored.ID, created, first.ID)
	}
}

// Creates racing for the last places — batched together by a durable
// backend — get exactly the places left; each refused one fails alone.
func testConcurrentCreatesStopAtTheTotal(t *testing.T, b backend.Backend) {
	ops := make([]*backend.Operation, 24)
	for i := range ops {
		ops[i] = newOperation(now())
	}
	if created := raceCreates(t, b, ops, backend.ErrQueueFull); len(created) != 5 {
		t.Errorf("%d operations created by %d racing Creates with a bound of 5, want exactly 5", len(created), len(ops))
	}
}

func testConcurrentCreatesStopAtEachOwnersBound(t *testing.T, b backend.Backend) {
	owners := []string{"owner-" + newID(), "owner-" + newID()}
	ops := make([]*backend.Operation, 24)
	for i := range ops {
		ops[i] = newOperation(now())
		ops[i].Owner = owners[i%len(owners)]
	}
	perOwner := make(map[string]int)
	for _, op := range raceCreates(t, b, ops, backend.ErrOwnerQueueFull) {
		perOwner[op.Owner]++
	}
	for _, owner := range owners {
		if perOwner[owner] != 3 {
			t.Errorf("%d operations of one owner created by %d racing Creates of two owners with a bound of 3 per owner, want exactly 3",
				perOwner[owner], len(ops))
		}
	}
}

// raceCreates creates ops all at once and returns those created. Every
// other one must have been refused with refusal, and not stored.
func raceCreates(t *testing.T, b backend.Backend, ops []*backend.Operation, refusal error) []*backend.Operation {
	t.Helper()
	errs := make([]error, len(ops))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Go(func() {
			<-start
			_, _, errs[i] = b.Create(t.Context(), op)
		})
	}
	close(start)
	wg.Wait()

	var created []*backend.Operation
	for i, err := range errs {
		switch {
		case err == nil:
			created = append(created, ops[i])
		case errors.Is(err, refusal):
			if _, err := b.Get(t.Context(), ops[i].ID); !errors.Is(err, backend.ErrNotFound) {
				t.Errorf("Get of an operation whose Create was refused returned error %v, want ErrNotFound: nothing may be stored", err)
			}
		default:
			t.Errorf("Create racing for the last places: %v, want nil or an error matching %v; a refused batch-mate must fail alone", err, refusal)
		}
	}
	return created
}

// mustRefuse creates op, which must be refused with an error matching
// refusal and leave nothing stored, and returns the refusal.
func mustRefuse(t *testing.T, b backend.Backend, op *backend.Operation, refusal error, what string) error {
	t.Helper()
	_, created, err := b.Create(t.Context(), op)
	if !errors.Is(err, refusal) {
		t.Fatalf("Create of %s returned created = %v, error %v; want an error matching %v", what, created, err, refusal)
	}
	if _, err := b.Get(t.Context(), op.ID); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Get of %s, refused, returned error %v, want ErrNotFound: nothing may be stored", what, err)
	}
	return err
}
