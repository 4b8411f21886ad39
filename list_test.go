package asyncreply_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

type listDoc struct {
	Operations    []statusDoc `json:"operations"`
	NextPageToken string      `json:"nextPageToken"`
}

func (b *bundle) list(t *testing.T, query string, header ...string) (reply, listDoc) {
	t.Helper()
	r := b.do(t, http.MethodGet, asyncreply.DefaultPrefix+query, "", header...)
	var doc listDoc
	if r.code == http.StatusOK {
		if err := json.Unmarshal(r.body, &doc); err != nil {
			t.Fatalf("list body %s: %v", r.body, err)
		}
	}
	return r, doc
}

func TestListOwnOperations(t *testing.T) {
	t.Parallel()
	g := newGate(text("done"))
	defer g.release.fire()
	b := setup(t, asyncreply.Config{Owner: userFromHeader}, route("GET /reports/{id}", asyncreply.Async(g)))
	alice := []string{"X-User", "alice"}

	var alices []string // oldest first
	for _, id := range []string{"1", "2", "3"} {
		_, loc := b.submit(t, http.MethodGet, "/reports/"+id, "", alice...)
		alices = append(alices, loc)
	}
	_, bobs := b.submit(t, http.MethodGet, "/reports/9", "", "X-User", "bob")

	r, doc := b.list(t, "", alice...)
	if r.code != http.StatusOK || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("list = %s (Cache-Control %q), want 200, no-store", r, r.header.Get("Cache-Control"))
	}
	var got []string
	for _, op := range doc.Operations {
		got = append(got, op.Links.Self)
		if op.Links.Self == bobs {
			t.Errorf("alice's list shows bob's operation %s", bobs)
		}
	}
	if want := []string{alices[2], alices[1], alices[0]}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("alice's list = %q, want her three, newest first: %q", got, want)
	}

	// Paged: two, then the last one, then no token.
	_, first := b.list(t, "?pageSize=2", alice...)
	if len(first.Operations) != 2 || first.NextPageToken == "" {
		t.Fatalf("first page = %d operations, token %q; want 2 and a token", len(first.Operations), first.NextPageToken)
	}
	_, second := b.list(t, "?pageSize=2&pageToken="+url.QueryEscape(first.NextPageToken), alice...)
	if len(second.Operations) != 1 || second.Operations[0].Links.Self != alices[0] || second.NextPageToken != "" {
		t.Errorf("second page = %+v, want alice's oldest alone and no token", second)
	}
	// A token is the list's own: another owner cannot page with it.
	if r, _ := b.list(t, "?pageSize=2&pageToken="+url.QueryEscape(first.NextPageToken), "X-User", "bob"); r.code != http.StatusBadRequest {
		t.Errorf("bob paging with alice's token = %s, want 400", r)
	}

	// Filtered by status.
	testwait.Recv(t, g.started, "a replay to start")
	_, running := b.list(t, "?status=Running", alice...)
	_, waiting := b.list(t, "?status=NotStarted,Succeeded", alice...)
	if len(running.Operations)+len(waiting.Operations) != 3 || len(running.Operations) == 0 {
		t.Errorf("Running %d + NotStarted,Succeeded %d, want the three split with some running", len(running.Operations), len(waiting.Operations))
	}
	for _, op := range running.Operations {
		if op.Status != "Running" {
			t.Errorf("?status=Running listed a %s operation", op.Status)
		}
	}

	for _, bad := range []string{"?status=Canceled", "?status=done", "?pageSize=0", "?pageSize=5000", "?pageToken=garbage", "?createdAfter=yesterday"} {
		if r, _ := b.list(t, bad, alice...); r.code != http.StatusBadRequest || r.header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("list%s = %s, want a 400 problem", bad, r)
		}
	}
	if r, _ := b.list(t, ""); r.code != http.StatusNotFound {
		t.Errorf("list without credentials = %s, want 404", r)
	}
	if r := b.do(t, http.MethodPost, asyncreply.DefaultPrefix, ""); r.code != http.StatusMethodNotAllowed {
		t.Errorf("POST of the list = %s, want 405", r)
	}
}

func TestListNeedsOwnersAndAListingBackend(t *testing.T) {
	t.Parallel()
	// Without owners there is no "own": a list would hand out everyone's URLs.
	unowned := setup(t, asyncreply.Config{}, route("GET /reports/{id}", asyncreply.Async(text("done"))))
	unowned.submit(t, http.MethodGet, "/reports/1", "")
	if r, _ := unowned.list(t, ""); r.code != http.StatusNotFound {
		t.Errorf("list without Config.Owner = %s, want 404", r)
	}
	// A backend that does not implement backend.Lister.
	hidden := setup(t, asyncreply.Config{Owner: userFromHeader, Backend: storeOnly{memory.New(memory.Config{})}}, http.NotFoundHandler())
	if r, _ := hidden.list(t, "", "X-User", "alice"); r.code != http.StatusNotImplemented {
		t.Errorf("list on a backend that does not list = %s, want 501", r)
	}
}
