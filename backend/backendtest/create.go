package backendtest

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

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
