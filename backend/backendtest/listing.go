package backendtest

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// listerRule runs a rule of [backend.Lister], skipped when the backend does
// not implement it: listing is optional, and everything else must work
// without it.
func (r runner) listerRule(t *testing.T, name string, test func(t *testing.T, b backend.Backend, l backend.Lister)) {
	t.Helper()
	r.rule(t, name, func(t *testing.T, b backend.Backend) {
		l, ok := b.(backend.Lister)
		if !ok {
			t.Skip("the backend does not implement backend.Lister")
		}
		test(t, b, l)
	})
}

// createListed creates n operations of owner, created a millisecond apart
// from start on, and returns them as a listing shows them: as Get returns
// them, without Request or Response.
func createListed(t *testing.T, b backend.Backend, owner string, start time.Time, n int) []*backend.Operation {
	t.Helper()
	var ops []*backend.Operation
	for i := range n {
		op := newOperation(start.Add(time.Duration(i) * time.Millisecond))
		op.Owner = owner
		mustCreate(t, b, op)
		ops = append(ops, listed(mustGet(t, b, op.ID)))
	}
	return ops
}

// listed is op as a listing shows it.
func listed(op *backend.Operation) *backend.Operation {
	c := cloneOperation(op)
	c.Request, c.Response = nil, nil
	return c
}

// newestFirst sorts ops in the order of a listing.
func newestFirst(ops []*backend.Operation) []*backend.Operation {
	ops = slices.Clone(ops)
	slices.SortFunc(ops, func(a, b *backend.Operation) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(b.ID, a.ID))
	})
	return ops
}

// listAll pages through q from its PageToken on and returns every operation
// listed, in order.
func listAll(t *testing.T, l backend.Lister, q backend.ListQuery) []*backend.Operation {
	t.Helper()
	var all []*backend.Operation
	for range 1000 {
		page := mustList(t, l, q)
		all = append(all, page.Operations...)
		if page.NextPageToken == "" {
			return all
		}
		q.PageToken = page.NextPageToken
	}
	t.Fatal("List returned a next page token 1000 times over")
	return nil
}

func mustList(t *testing.T, l backend.Lister, q backend.ListQuery) backend.ListPage {
	t.Helper()
	page, err := l.List(t.Context(), q)
	if err != nil {
		t.Fatalf("List(%+v): %v", q, err)
	}
	if size := cmp.Or(max(q.PageSize, 0), backend.DefaultPageSize); len(page.Operations) > size {
		t.Fatalf("List returned %d operations on a page of %d", len(page.Operations), size)
	}
	return page
}

// assertListed compares a listing with the operations it must show, in
// order, reporting what is missing, repeated or out of place.
func assertListed(t *testing.T, what string, got, want []*backend.Operation) {
	t.Helper()
	ids := func(ops []*backend.Operation) []string {
		var ids []string
		for _, op := range ops {
			ids = append(ids, op.ID)
		}
		return ids
	}
	if !slices.Equal(ids(got), ids(want)) {
		t.Errorf("%s listed\n\t%v\nwant, newest first,\n\t%v", what, ids(got), ids(want))
		return
	}
	for i := range got {
		assertOperation(t, fmt.Sprintf("%s, operation %d", what, i), got[i], want[i])
	}
}

// Pages of k through N operations list each once, newest first, ties in
// creation time broken by ID; and what is listed carries no bodies.
func testListPagesEachOperationOnceNewestFirst(t *testing.T, b backend.Backend, l backend.Lister) {
	owner := "owner-" + newID()
	start := now()
	ops := createListed(t, b, owner, start, 7)
	// Three created at the same instant, as concurrent creates may be.
	for range 3 {
		op := newOperation(start.Add(3 * time.Millisecond))
		op.Owner = owner
		mustCreate(t, b, op)
		ops = append(ops, listed(mustGet(t, b, op.ID)))
	}
	for _, pageSize := range []int{1, 3, 10, 11} {
		got := listAll(t, l, backend.ListQuery{Owner: owner, PageSize: pageSize, Now: now()})
		assertListed(t, fmt.Sprintf("pages of %d", pageSize), got, newestFirst(ops))
	}
}

// A page size of zero is the default one, and the last page has no next
// page token.
func testListDefaultPageSize(t *testing.T, b backend.Backend, l backend.Lister) {
	owner := "owner-" + newID()
	ops := createListed(t, b, owner, now(), backend.DefaultPageSize+1)
	page := mustList(t, l, backend.ListQuery{Owner: owner, Now: now()})
	if len(page.Operations) != backend.DefaultPageSize || page.NextPageToken == "" {
		t.Fatalf("first page without a PageSize: %d operations, next page token %q; want %d and a token",
			len(page.Operations), page.NextPageToken, backend.DefaultPageSize)
	}
	last := mustList(t, l, backend.ListQuery{Owner: owner, PageToken: page.NextPageToken, Now: now()})
	assertListed(t, "second page", last.Operations, newestFirst(ops)[backend.DefaultPageSize:])
	if last.NextPageToken != "" {
		t.Errorf("last page has next page token %q, want none", last.NextPageToken)
	}
}

// Operations created while a client pages are newer than its cursor: the
// pages it goes on reading neither show them nor repeat or skip an older
// one; a fresh listing shows them first.
func testListCreatesDuringPagingAppearOnlyOnAFreshListing(t *testing.T, b backend.Backend, l backend.Lister) {
	owner := "owner-" + newID()
	start := now()
	ops := createListed(t, b, owner, start, 6)
	q := backend.ListQuery{Owner: owner, PageSize: 2, Now: now()}
	first := mustList(t, l, q)

	newer := createListed(t, b, owner, start.Add(time.Minute), 3)
	q.PageToken = first.NextPageToken
	got := append(first.Operations, listAll(t, l, q)...)
	assertListed(t, "pages read across creates", got, newestFirst(ops))

	fresh := listAll(t, l, backend.ListQuery{Owner: owner, PageSize: 2, Now: now()})
	assertListed(t, "a fresh listing", fresh, newestFirst(append(ops, newer...)))
}

// A sweep between pages, even of the operation a token points past, keeps
// the token valid and the pages after it right.
func testListSweepBetweenPagesKeepsTheToken(t *testing.T, b backend.Backend, l backend.Lister) {
	owner := "owner-" + newID()
	// As in the Sweep rule: expiries a day ahead keep any background
	// sweeping away, so that only the Sweep below deletes.
	sweepAt := now().Add(24 * time.Hour)
	const retention = time.Hour
	start := now()
	var ops []*backend.Operation
	for i := range 6 {
		op := newOperation(start.Add(time.Duration(i) * time.Millisecond))
		op.Owner, op.Retention = owner, retention
		mustCreate(t, b, op)
		ops = append(ops, op)
	}
	sorted := newestFirst(ops)
	// The last operation of the first page and the first of the second
	// expire before the sweep; the others after it.
	swept := sorted[1:3]
	for _, op := range sorted {
		finishedAt := sweepAt
		if slices.Contains(swept, op) {
			finishedAt = sweepAt.Add(-2 * retention)
		}
		mustComplete(t, b, op.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: finishedAt})
	}
	q := backend.ListQuery{Owner: owner, PageSize: 2, Now: now()}
	first := mustList(t, l, q)
	assertListed(t, "first page", first.Operations, relisted(t, b, sorted[:2]))

	if n, err := b.Sweep(t.Context(), sweepAt.Add(-retention)); err != nil || n != len(swept) {
		t.Fatalf("Sweep = %d, %v; want %d, nil", n, err, len(swept))
	}
	q.PageToken = first.NextPageToken
	assertListed(t, "pages after the sweep", listAll(t, l, q), relisted(t, b, sorted[3:]))
}

// relisted returns ops as a listing shows them now.
func relisted(t *testing.T, b backend.Backend, ops []*backend.Operation) []*backend.Operation {
	t.Helper()
	var got []*backend.Operation
	for _, op := range ops {
		got = append(got, listed(mustGet(t, b, op.ID)))
	}
	return got
}

// An owner lists its own operations only; "" lists those without an owner;
// an operator, with AnyOwner, lists them all. A token is good for the query
// it was returned for only.
func testListOwnerIsolation(t *testing.T, b backend.Backend, l backend.Lister) {
	alice, bob := "owner-"+newID(), "owner-"+newID()
	start := now()
	alices := createListed(t, b, alice, start, 3)
	bobs := createListed(t, b, bob, start.Add(time.Microsecond), 3)
	nobodys := createListed(t, b, "", start.Add(2*time.Microsecond), 2)

	assertListed(t, "alice's listing", listAll(t, l, backend.ListQuery{Owner: alice, PageSize: 2, Now: now()}), newestFirst(alices))
	assertListed(t, "bob's listing", listAll(t, l, backend.ListQuery{Owner: bob, PageSize: 2, Now: now()}), newestFirst(bobs))
	assertListed(t, "the listing without an owner", listAll(t, l, backend.ListQuery{PageSize: 2, Now: now()}), newestFirst(nobodys))
	all := slices.Concat(alices, bobs, nobodys)
	// Ignored with AnyOwner.
	assertListed(t, "the operator's listing", listAll(t, l, backend.ListQuery{Owner: alice, AnyOwner: true, PageSize: 3, Now: now()}), newestFirst(all))

	alicesFirst := mustList(t, l, backend.ListQuery{Owner: alice, PageSize: 1, Now: now()})
	_, err := l.List(t.Context(), backend.ListQuery{Owner: bob, PageSize: 1, PageToken: alicesFirst.NextPageToken, Now: now()})
	requireErrorIs(t, err, backend.ErrBadPageToken, "List of bob's with a token of alice's listing")
	_, err = l.List(t.Context(), backend.ListQuery{AnyOwner: true, PageSize: 1, PageToken: alicesFirst.NextPageToken, Now: now()})
	requireErrorIs(t, err, backend.ErrBadPageToken, "List of every owner's with a token of alice's listing")
}

// Statuses and creation bounds select what is listed; bounds are strict.
func testListFiltersByStatusAndCreationTime(t *testing.T, b backend.Backend, l backend.Lister) {
	owner := "owner-" + newID()
	start := now()
	ops := createListed(t, b, owner, start, 6) // 0, 1 stay NotStarted
	mustMarkRunning(t, b, ops[2].ID, now())
	mustMarkRunning(t, b, ops[3].ID, now())
	mustComplete(t, b, ops[4].ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: now()})
	mustComplete(t, b, ops[5].ID, backend.Outcome{Status: backend.Failed, Failure: &backend.Failure{Status: 500, Title: "Internal Server Error"}, At: now()})
	ops = relisted(t, b, ops)

	for _, c := range []struct {
		what  string
		q     backend.ListQuery
		match func(i int, op *backend.Operation) bool
	}{
		{"NotStarted", backend.ListQuery{Statuses: []backend.Status{backend.NotStarted}},
			func(i int, op *backend.Operation) bool { return i < 2 }},
		{"Running or Succeeded", backend.ListQuery{Statuses: []backend.Status{backend.Running, backend.Succeeded}},
			func(i int, op *backend.Operation) bool { return i >= 2 && i <= 4 }},
		{"Failed", backend.ListQuery{Statuses: []backend.Status{backend.Failed}},
			func(i int, op *backend.Operation) bool { return i == 5 }},
		{"Canceled only", backend.ListQuery{Statuses: []backend.Status{backend.Canceled}},
			func(i int, op *backend.Operation) bool { return false }},
		{"created after the second", backend.ListQuery{CreatedAfter: ops[1].CreatedAt},
			func(i int, op *backend.Operation) bool { return i > 1 }},
		{"created before the fifth", backend.ListQuery{CreatedBefore: ops[4].CreatedAt},
			func(i int, op *backend.Operation) bool { return i < 4 }},
		{"Running, created between the first and the fourth", backend.ListQuery{
			Statuses: []backend.Status{backend.Running}, CreatedAfter: ops[0].CreatedAt, CreatedBefore: ops[3].CreatedAt},
			func(i int, op *backend.Operation) bool { return i == 2 }},
	} {
		q := c.q
		q.Owner, q.PageSize, q.Now = owner, 1, now()
		var want []*backend.Operation
		for i, op := range ops {
			if c.match(i, op) {
				want = append(want, op)
			}
		}
		assertListed(t, c.what, listAll(t, l, q), newestFirst(want))
	}
}

// What a client can no longer poll is not listed, nor counted: expired
// operations, swept or not, and canceled ones.
func testListLeavesOutExpiredAndCanceled(t *testing.T, b backend.Backend, l backend.Lister) {
	owner := "owner-" + newID()
	listAt := now().Add(24 * time.Hour)
	ops := createListed(t, b, owner, now(), 4)
	expiresAtListAt := backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: listAt.Add(-ops[0].Retention)}
	mustComplete(t, b, ops[0].ID, expiresAtListAt)
	mustCancel(t, b, ops[1].ID, now())
	liveSucceeded := backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: listAt.Add(-ops[2].Retention + time.Microsecond)}
	mustComplete(t, b, ops[2].ID, liveSucceeded)
	want := newestFirst(relisted(t, b, ops[2:]))

	assertListed(t, "a listing at the expiry of one and after the cancellation of another",
		listAll(t, l, backend.ListQuery{Owner: owner, Now: listAt}), want)
	assertListed(t, "a listing asking for Canceled too",
		listAll(t, l, backend.ListQuery{Owner: owner, Statuses: []backend.Status{backend.Canceled, backend.Succeeded, backend.NotStarted}, Now: listAt}), want)
	assertCounts(t, l, backend.CountQuery{Owner: owner, Now: listAt}, map[backend.Status]int{backend.NotStarted: 1, backend.Succeeded: 1})
}

// Counts by status are those of the listing: per owner, or of every owner.
func testCountByStatus(t *testing.T, b backend.Backend, l backend.Lister) {
	alice, bob := "owner-"+newID(), "owner-"+newID()
	alices := createListed(t, b, alice, now(), 5)
	mustMarkRunning(t, b, alices[0].ID, now())
	mustMarkRunning(t, b, alices[1].ID, now())
	mustComplete(t, b, alices[1].ID, backend.Outcome{Status: backend.Failed, Failure: &backend.Failure{Status: 500, Title: "Internal Server Error"}, At: now()})
	mustComplete(t, b, alices[2].ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: now()})
	mustCancel(t, b, alices[3].ID, now())
	bobs := createListed(t, b, bob, now(), 2)
	mustComplete(t, b, bobs[0].ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("ok"), At: now()})
	createListed(t, b, "", now(), 1)

	assertCounts(t, l, backend.CountQuery{Owner: alice, Now: now()},
		map[backend.Status]int{backend.NotStarted: 1, backend.Running: 1, backend.Succeeded: 1, backend.Failed: 1})
	assertCounts(t, l, backend.CountQuery{Owner: bob, Now: now()},
		map[backend.Status]int{backend.NotStarted: 1, backend.Succeeded: 1})
	assertCounts(t, l, backend.CountQuery{Now: now()},
		map[backend.Status]int{backend.NotStarted: 1})
	assertCounts(t, l, backend.CountQuery{Owner: bob, AnyOwner: true, Now: now()},
		map[backend.Status]int{backend.NotStarted: 3, backend.Running: 1, backend.Succeeded: 2, backend.Failed: 1})
}

// assertCounts checks CountByStatus against want, in which a missing
// listable status counts zero.
func assertCounts(t *testing.T, l backend.Lister, q backend.CountQuery, want map[backend.Status]int) {
	t.Helper()
	got, err := l.CountByStatus(t.Context(), q)
	if err != nil {
		t.Fatalf("CountByStatus(%+v): %v", q, err)
	}
	full := map[backend.Status]int{backend.NotStarted: 0, backend.Running: 0, backend.Succeeded: 0, backend.Failed: 0}
	for s, n := range want {
		full[s] = n
	}
	if !maps.Equal(got, full) {
		t.Errorf("CountByStatus(%+v) = %v, want %v", q, got, full)
	}
}

// A token that List did not return is refused with ErrBadPageToken, so that
// callers answer 400 rather than list from an arbitrary place.
func testListBadPageTokenIsRefused(t *testing.T, b backend.Backend, l backend.Lister) {
	owner := "owner-" + newID()
	createListed(t, b, owner, now(), 3)
	page := mustList(t, l, backend.ListQuery{Owner: owner, PageSize: 1, Now: now()})
	for _, token := range []string{"not a token", "AAAA", page.NextPageToken[:len(page.NextPageToken)/2], page.NextPageToken + "!"} {
		_, err := l.List(t.Context(), backend.ListQuery{Owner: owner, PageSize: 1, PageToken: token, Now: now()})
		requireErrorIs(t, err, backend.ErrBadPageToken, fmt.Sprintf("List with page token %q", token))
	}
	_, err := l.List(t.Context(), backend.ListQuery{Owner: owner, Statuses: []backend.Status{backend.Running}, PageSize: 1, PageToken: page.NextPageToken, Now: now()})
	requireErrorIs(t, err, backend.ErrBadPageToken, "List with the token of a query without a status filter")
}
