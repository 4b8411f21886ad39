package backendtest

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// changesRule runs a rule of [backend.ChangeLister], skipped when the
// backend does not implement it.
func (r runner) changesRule(t *testing.T, name string, test func(t *testing.T, b backend.Backend, c backend.ChangeLister)) {
	t.Helper()
	r.rule(t, name, func(t *testing.T, b backend.Backend) {
		c, ok := b.(backend.ChangeLister)
		if !ok {
			t.Skip("the backend does not implement backend.ChangeLister")
		}
		test(t, b, c)
	})
}

// inChangeOrder sorts ops as Changes returns them.
func inChangeOrder(ops []*backend.Operation) []*backend.Operation {
	ops = slices.Clone(ops)
	slices.SortFunc(ops, func(a, b *backend.Operation) int {
		return cmp.Or(a.UpdatedAt.Compare(b.UpdatedAt), strings.Compare(a.ID, b.ID))
	})
	return ops
}

func mustChanges(t *testing.T, c backend.ChangeLister, q backend.ChangeQuery) []*backend.Operation {
	t.Helper()
	ops, err := c.Changes(t.Context(), q)
	if err != nil {
		t.Fatalf("Changes(%+v): %v", q, err)
	}
	if limit := cmp.Or(max(q.Limit, 0), backend.DefaultPageSize); len(ops) > limit {
		t.Fatalf("Changes returned %d operations with a limit of %d", len(ops), limit)
	}
	for _, op := range ops {
		if op.Request != nil || op.Response != nil {
			t.Fatalf("Changes returned operation %q with its Request or Response", op.ID)
		}
	}
	return ops
}

// allChanges follows q from its After on, a page at a time, as a feed
// does, and returns every operation returned, in order.
func allChanges(t *testing.T, c backend.ChangeLister, q backend.ChangeQuery) []*backend.Operation {
	t.Helper()
	var all []*backend.Operation
	for range 1000 {
		page := mustChanges(t, c, q)
		all = append(all, page...)
		if len(page) < cmp.Or(max(q.Limit, 0), backend.DefaultPageSize) {
			return all
		}
		q.After = backend.CursorOf(page[len(page)-1]).String()
	}
	t.Fatal("Changes returned a full page 1000 times over")
	return nil
}

// Changes are returned by last change ascending, ties broken by ID, each
// once whatever the page size, and every page starts right after the
// cursor it was given.
func testChangesInOrderPagedByCursor(t *testing.T, b backend.Backend, c backend.ChangeLister) {
	owner := "owner-" + newID()
	start := now()
	var ids []string
	for i := range 5 {
		op := newOperation(start.Add(time.Duration(i) * time.Millisecond))
		op.Owner = owner
		mustCreate(t, b, op)
		ids = append(ids, op.ID)
	}
	// Three changed at the same instant, as concurrent changes may be.
	for _, id := range ids[:3] {
		mustMarkRunning(t, b, id, start.Add(time.Second))
	}
	var want []*backend.Operation
	for _, id := range ids {
		want = append(want, listed(mustGet(t, b, id)))
	}
	want = inChangeOrder(want)
	for _, limit := range []int{1, 2, 5, 6} {
		got := allChanges(t, c, backend.ChangeQuery{Owner: owner, Limit: limit, Now: now()})
		assertListed(t, fmt.Sprintf("changes in pages of %d", limit), got, want)
	}
	for i := range want {
		after := backend.CursorOf(want[i]).String()
		got := mustChanges(t, c, backend.ChangeQuery{Owner: owner, After: after, Limit: 10, Now: now()})
		assertListed(t, "changes after "+after, got, want[i+1:])
	}
	// A cursor between stored changes, at a time nothing changed.
	between := backend.ChangeCursor{UpdatedAt: start.Add(500 * time.Millisecond), ID: "~"}.String()
	got := mustChanges(t, c, backend.ChangeQuery{Owner: owner, After: between, Limit: 10, Now: now()})
	assertListed(t, "changes after a cursor between them", got, want[2:])
}

// An operation is returned at its last change only, so that a cursor past
// an earlier change still finds the later one.
func testChangesShowTheLastChangeOnly(t *testing.T, b backend.Backend, c backend.ChangeLister) {
	owner := "owner-" + newID()
	start := now()
	op := newOperation(start)
	op.Owner = owner
	mustCreate(t, b, op)
	created := listed(mustGet(t, b, op.ID))
	got := mustChanges(t, c, backend.ChangeQuery{Owner: owner, Now: now()})
	assertListed(t, "changes after the create", got, []*backend.Operation{created})

	mustMarkRunning(t, b, op.ID, start.Add(time.Millisecond))
	if err := b.SetProgress(t.Context(), op.ID, backend.Progress{Percent: 40, Message: "half"}, start.Add(2*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	progressed := listed(mustGet(t, b, op.ID))
	after := backend.CursorOf(created).String()
	got = mustChanges(t, c, backend.ChangeQuery{Owner: owner, After: after, Now: now()})
	assertListed(t, "changes after the create's cursor", got, []*backend.Operation{progressed})
	got = mustChanges(t, c, backend.ChangeQuery{Owner: owner, Now: now()})
	assertListed(t, "every change", got, []*backend.Operation{progressed})

	mustComplete(t, b, op.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: start.Add(3 * time.Millisecond)})
	done := listed(mustGet(t, b, op.ID))
	got = mustChanges(t, c, backend.ChangeQuery{Owner: owner, After: backend.CursorOf(progressed).String(), Now: now()})
	assertListed(t, "changes after the progress's cursor", got, []*backend.Operation{done})
}

// An owner's changes are that owner's only, "" being the operations
// without an owner; AnyOwner returns everyone's.
func testChangesOwnerIsolation(t *testing.T, b backend.Backend, c backend.ChangeLister) {
	start := now()
	alice := createListed(t, b, "alice-"+newID(), start, 3)
	bob := createListed(t, b, "bob-"+newID(), start.Add(time.Microsecond), 2)
	nobody := createListed(t, b, "", start.Add(2*time.Microsecond), 2)
	for _, tc := range []struct {
		name string
		q    backend.ChangeQuery
		want []*backend.Operation
	}{
		{"alice's", backend.ChangeQuery{Owner: alice[0].Owner}, alice},
		{"bob's", backend.ChangeQuery{Owner: bob[0].Owner}, bob},
		{"those without an owner", backend.ChangeQuery{Owner: ""}, nobody},
		{"an unknown owner's", backend.ChangeQuery{Owner: "carol"}, nil},
		{"every owner's", backend.ChangeQuery{Owner: alice[0].Owner, AnyOwner: true}, slices.Concat(alice, bob, nobody)},
	} {
		tc.q.Now = now()
		assertListed(t, tc.name+" changes", allChanges(t, c, tc.q), inChangeOrder(tc.want))
	}
}

// A cancellation is a change: the canceled tombstone is returned, at the
// time of the cancel, until it expires. Expired operations are never
// returned, swept or not.
func testChangesIncludeCanceledNotExpired(t *testing.T, b backend.Backend, c backend.ChangeLister) {
	owner := "owner-" + newID()
	start := now()
	const retention = time.Hour
	create := func(at time.Time) *backend.Operation {
		op := newOperation(at)
		op.Owner, op.Retention = owner, retention
		mustCreate(t, b, op)
		return op
	}
	canceled := create(start)
	mustCancel(t, b, canceled.ID, start.Add(time.Millisecond))
	expired := create(start.Add(2 * time.Millisecond))
	mustComplete(t, b, expired.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: start.Add(-2 * retention)})
	expiredTombstone := create(start.Add(3 * time.Millisecond))
	mustCancel(t, b, expiredTombstone.ID, start.Add(-2*retention))
	running := create(start.Add(4 * time.Millisecond))
	mustMarkRunning(t, b, running.ID, start.Add(5*time.Millisecond))

	got := allChanges(t, c, backend.ChangeQuery{Owner: owner, Now: now()})
	want := []*backend.Operation{listed(mustGet(t, b, canceled.ID)), listed(mustGet(t, b, running.ID))}
	assertListed(t, "changes", got, inChangeOrder(want))
	if len(got) > 0 && (got[0].Status != backend.Canceled || !got[0].UpdatedAt.Equal(start.Add(time.Millisecond))) {
		t.Errorf("the canceled operation is returned %s at %v, want Canceled at the cancel's %v",
			got[0].Status, got[0].UpdatedAt, start.Add(time.Millisecond))
	}
	// Past the tombstone's retention, the cancel is no longer returned.
	got = allChanges(t, c, backend.ChangeQuery{Owner: owner, Now: start.Add(time.Millisecond + retention)})
	assertListed(t, "changes once the tombstone expired", got, []*backend.Operation{listed(mustGet(t, b, running.ID))})
}

// A limit of zero is the default page size, and one past MaxPageSize is
// MaxPageSize.
func testChangesDefaultLimit(t *testing.T, b backend.Backend, c backend.ChangeLister) {
	owner := "owner-" + newID()
	ops := createListed(t, b, owner, now(), backend.DefaultPageSize+1)
	got := mustChanges(t, c, backend.ChangeQuery{Owner: owner, Now: now()})
	assertListed(t, "changes without a limit", got, inChangeOrder(ops)[:backend.DefaultPageSize])
	got, err := c.Changes(t.Context(), backend.ChangeQuery{Owner: owner, Limit: backend.MaxPageSize + 1, Now: now()})
	if err != nil {
		t.Fatal(err)
	}
	assertListed(t, "changes past the largest limit", got, inChangeOrder(ops))
}

// A cursor that no ChangeCursor encoded is refused, never taken for the
// start.
func testChangesBadCursorIsRefused(t *testing.T, b backend.Backend, c backend.ChangeLister) {
	owner := "owner-" + newID()
	createListed(t, b, owner, now(), 1)
	for _, after := range []string{"x", "no-dot", ".id", "-1.id", "zzzzzzzzzzzzzzzzzz.id", "1.has space", "1." + strings.Repeat("a", 300)} {
		ops, err := c.Changes(t.Context(), backend.ChangeQuery{Owner: owner, After: after, Now: now()})
		if !errors.Is(err, backend.ErrBadCursor) {
			t.Errorf("Changes(After: %q) = %d operations, %v; want ErrBadCursor", after, len(ops), err)
		}
	}
}
