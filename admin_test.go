package asyncreply_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/backend/sqlite"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// adminBundle is an application with its operations seen from the
// dashboard, served on a listener of its own as an operator's would be.
type adminBundle struct {
	*bundle
	admin *httptest.Server
	held  *gate // GET /held/{id}: reports 40% "halfway", then waits
}

// adminOperation is an operation as the dashboard's API returns it.
type adminOperation struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Owner    string `json:"owner"`
	Attempt  int    `json:"attempt"`
	Progress struct {
		Percent int    `json:"percent"`
		Message string `json:"message"`
	} `json:"progress"`
	Error      *problemDoc `json:"error"`
	Rerunnable bool        `json:"rerunnable"`
	RerunOf    string      `json:"rerunOf"`
}

type adminSummary struct {
	Listing     bool           `json:"listing"`
	Counts      map[string]int `json:"counts"`
	Unavailable string         `json:"unavailable"`
	Recent      struct {
		WindowSeconds               int `json:"windowSeconds"`
		Accepted, Succeeded, Failed int
	} `json:"recent"`
	Durations []struct {
		Metric string  `json:"metric"`
		Count  int     `json:"count"`
		Mean   float64 `json:"meanSeconds"`
	} `json:"durations"`
	ReplaysInFlight int              `json:"replaysInFlight"`
	InFlight        []adminOperation `json:"inFlight"`
	Failures        []adminOperation `json:"failures"`
}

// setupAdmin serves /ok, /fail and /held/{id} with operations owned by
// their X-User, on one worker: an operation waits while one is held.
func setupAdmin(t *testing.T, cfg asyncreply.Config) *adminBundle {
	t.Helper()
	held := newGate(text("released"))
	mux := http.NewServeMux()
	mux.Handle("GET /ok/{id}", asyncreply.Async(text("ok")))
	mux.Handle("GET /fail", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asyncreply.Fail(r.Context(), http.StatusBadGateway, "Upstream unreachable", "The report service did not answer.")
	})))
	mux.Handle("GET /held/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asyncreply.ReportProgress(r.Context(), 40, "halfway")
		held.ServeHTTP(w, r)
	})))
	if cfg.Backend == nil {
		cfg.Backend = memory.New(memory.Config{Concurrency: 1})
	}
	cfg.Owner = userFromHeader
	b := setup(t, cfg, mux)
	t.Cleanup(held.release.fire) // cleanups run last first: before the bundle's shuts down
	admin := httptest.NewServer(b.ar.AdminHandler())
	t.Cleanup(admin.Close)
	return &adminBundle{bundle: b, admin: admin, held: held}
}

// adminDo sends a request to the dashboard's listener.
func (b *adminBundle) adminDo(t *testing.T, method, path, body string, header ...string) reply {
	t.Helper()
	return b.do(t, method, b.admin.URL+path, body, header...)
}

func (b *adminBundle) summary(t *testing.T) adminSummary {
	t.Helper()
	r := b.adminDo(t, http.MethodGet, "/api/summary", "")
	if r.code != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/summary = %s", r)
	}
	var s adminSummary
	if err := json.Unmarshal(r.body, &s); err != nil {
		t.Fatalf("decoding the summary: %v\n%s", err, r.body)
	}
	return s
}

func decodeAdminOperation(t *testing.T, r reply) adminOperation {
	t.Helper()
	var op adminOperation
	if err := json.Unmarshal(r.body, &op); err != nil {
		t.Fatalf("decoding an operation: %v\n%s", err, r.body)
	}
	return op
}

// fill makes two succeeded operations, one failed, one running (held) and
// one waiting behind it, of two owners, and returns the held one's and the
// waiting one's IDs. With one worker, the held one starts only once every
// earlier outcome has been counted.
func (b *adminBundle) fill(t *testing.T) (running, waiting string) {
	t.Helper()
	for i, user := range []string{"alice", "bob"} {
		_, monitor := b.submit(t, http.MethodGet, "/ok/"+string(rune('1'+i)), "", "X-User", user)
		if r := b.finish(t, monitor, "X-User", user); r.code != http.StatusSeeOther {
			t.Fatalf("ok = %s, want 303", r)
		}
	}
	_, failed := b.submit(t, http.MethodGet, "/fail", "", "X-User", "bob")
	if r := b.finish(t, failed, "X-User", "bob"); r.code != http.StatusBadGateway {
		t.Fatalf("fail = %s, want 502", r)
	}
	_, monitor := b.submit(t, http.MethodGet, "/held/1", "", "X-User", "alice")
	running = opID(t, monitor)
	if id := testwait.Recv(t, b.held.started, "the held replay to start"); id != running {
		t.Fatalf("started %s, want %s", id, running)
	}
	_, monitor = b.submit(t, http.MethodGet, "/held/2", "", "X-User", "bob")
	return running, opID(t, monitor)
}

// The summary counts what the test made, across owners: the store's
// operations by status, this process's last minute, the durations, the
// operations in flight with their progress and attempts, and the failure
// with its problem details.
func TestAdminSummary(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, asyncreply.Config{})
	running, waiting := b.fill(t)

	s := b.summary(t)
	if !s.Listing || s.Unavailable != "" {
		t.Errorf("listing %v, unavailable %q: want the store listed", s.Listing, s.Unavailable)
	}
	want := map[string]int{"NotStarted": 1, "Running": 1, "Succeeded": 2, "Failed": 1}
	if !mapsEqual(s.Counts, want) {
		t.Errorf("counts = %v, want %v", s.Counts, want)
	}
	if s.Recent.WindowSeconds != 60 || s.Recent.Accepted != 5 || s.Recent.Succeeded != 2 || s.Recent.Failed != 1 {
		t.Errorf("recent = %+v, want 60 s: 5 accepted, 2 succeeded, 1 failed", s.Recent)
	}
	counts := map[string]int{}
	for _, d := range s.Durations {
		counts[d.Metric] = d.Count
	}
	wantDurations := map[string]int{
		"asyncreply_operation_queue_wait_seconds":   4,
		"asyncreply_operation_run_duration_seconds": 3,
		"asyncreply_operation_duration_seconds":     3,
	}
	if !mapsEqual(counts, wantDurations) {
		t.Errorf("duration counts = %v, want %v", counts, wantDurations)
	}
	if s.ReplaysInFlight != 1 {
		t.Errorf("replays in flight = %d, want 1", s.ReplaysInFlight)
	}

	if len(s.InFlight) != 2 {
		t.Fatalf("in flight = %+v, want 2", s.InFlight)
	}
	w, r := s.InFlight[0], s.InFlight[1] // newest first
	if w.ID != waiting || w.Status != "NotStarted" || w.Attempt != 0 || !w.Rerunnable {
		t.Errorf("waiting = %+v, want %s NotStarted, attempt 0, rerunnable", w, waiting)
	}
	if r.ID != running || r.Status != "Running" || r.Attempt != 1 || r.Progress.Percent != 40 || r.Progress.Message != "halfway" {
		t.Errorf("running = %+v, want %s Running, attempt 1, 40%% halfway", r, running)
	}
	if w.Owner == "" || r.Owner == "" || w.Owner == r.Owner {
		t.Errorf("owners %q and %q: want the digests of bob and alice", w.Owner, r.Owner)
	}
	if len(s.Failures) != 1 {
		t.Fatalf("failures = %+v, want 1", s.Failures)
	}
	if f := s.Failures[0]; f.Error == nil || f.Error.Status != 502 || f.Error.Title != "Upstream unreachable" ||
		f.Error.Detail != "The report service did not answer." || f.Rerunnable {
		t.Errorf("failure = %+v (error %+v), want the 502 with its title and detail, not rerunnable", f, f.Error)
	}

	// The list pages through every owner's operations.
	list := b.adminDo(t, http.MethodGet, "/api/operations?status=Succeeded&pageSize=1", "")
	var page struct {
		Operations    []adminOperation `json:"operations"`
		NextPageToken string           `json:"nextPageToken"`
	}
	if err := json.Unmarshal(list.body, &page); err != nil || list.code != http.StatusOK {
		t.Fatalf("GET /api/operations = %s (%v)", list, err)
	}
	if len(page.Operations) != 1 || page.NextPageToken == "" {
		t.Fatalf("first page = %+v, want one operation and a next page", page)
	}
	first := page.Operations[0]
	list = b.adminDo(t, http.MethodGet, "/api/operations?status=Succeeded&pageSize=1&pageToken="+page.NextPageToken, "")
	page.Operations, page.NextPageToken = nil, ""
	if err := json.Unmarshal(list.body, &page); err != nil || len(page.Operations) != 1 || page.NextPageToken != "" {
		t.Fatalf("second page = %s (%v), want the last operation", list, err)
	}
	if first.Owner == page.Operations[0].Owner {
		t.Errorf("both succeeded operations listed with owner %q: want alice's and bob's", first.Owner)
	}
	wantProblem(t, b.adminDo(t, http.MethodGet, "/api/operations?status=Lost", ""), http.StatusBadRequest)
	wantProblem(t, b.adminDo(t, http.MethodGet, "/api/operations?pageToken=nonsense", ""), http.StatusBadRequest)
}

func mapsEqual[V comparable](got, want map[string]V) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			return false
		}
	}
	return true
}

// Cancel ends a running replay's context and forgets the operation, as the
// client's DELETE does; canceling it again is a 404.
func TestAdminCancel(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, asyncreply.Config{})
	running, waiting := b.fill(t)

	if r := b.adminDo(t, http.MethodPost, "/api/operations/"+running+"/cancel", ""); r.code != http.StatusNoContent {
		t.Fatalf("cancel = %s, want 204", r)
	}
	if cause := testwait.Recv(t, b.held.ended, "the canceled replay to end"); !errors.Is(cause, backend.ErrCanceled) {
		t.Errorf("the replay's context ended with %v, want ErrCanceled", cause)
	}
	if r := b.do(t, http.MethodGet, asyncreply.DefaultPrefix+running, "", "X-User", "alice"); r.code != http.StatusNotFound {
		t.Errorf("the owner's poll after cancel = %s, want 404", r)
	}
	wantProblem(t, b.adminDo(t, http.MethodPost, "/api/operations/"+running+"/cancel", ""), http.StatusNotFound)
	// The worker, free again, takes the waiting one.
	if id := testwait.Recv(t, b.held.started, "the waiting operation to start"); id != waiting {
		t.Errorf("started %s, want %s", id, waiting)
	}
	if s := b.summary(t); len(s.InFlight) != 1 || s.InFlight[0].ID != waiting {
		t.Errorf("in flight after cancel = %+v, want only %s", s.InFlight, waiting)
	}
}

// Re-run of an operation still running makes a new one of the same owner
// from its recorded request, which executes; a finished operation has no
// request left and is a 409. On SQLite with a key, the request is opened
// with the original's ID and sealed again with the new one's.
func TestAdminRerun(t *testing.T) {
	t.Parallel()
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		testAdminRerun(t, asyncreply.Config{})
	})
	t.Run("SQLite, encrypted", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		be, err := sqlite.New(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "asyncreply.db"), Concurrency: 1, Logger: discardLogger})
		if err != nil {
			t.Fatalf("sqlite.New: %v", err)
		}
		testAdminRerun(t, asyncreply.Config{Backend: be, Key: bytes.Repeat([]byte{7}, 32)}) // stopped by its Middleware's Shutdown
	})
}

func testAdminRerun(t *testing.T, cfg asyncreply.Config) {
	b := setupAdmin(t, cfg)
	running, waiting := b.fill(t)

	r := b.adminDo(t, http.MethodPost, "/api/operations/"+running+"/rerun", "")
	if r.code != http.StatusCreated {
		t.Fatalf("rerun = %s, want 201", r)
	}
	again := decodeAdminOperation(t, r)
	if again.ID == "" || again.ID == running || again.RerunOf != running || again.Status != "NotStarted" {
		t.Fatalf("rerun = %+v, want a new NotStarted operation, rerun of %s", again, running)
	}
	monitor := asyncreply.DefaultPrefix + again.ID
	if r := b.do(t, http.MethodGet, monitor, "", "X-User", "bob"); r.code != http.StatusNotFound {
		t.Errorf("another owner's poll of the re-run = %s, want 404", r)
	}
	b.held.release.fire()
	var started []string
	for range 2 {
		started = append(started, testwait.Recv(t, b.held.started, "the waiting and the re-run operations to start"))
	}
	if !slices.Contains(started, again.ID) || !slices.Contains(started, waiting) {
		t.Errorf("started %v, want %s and %s", started, waiting, again.ID)
	}
	r = b.finish(t, monitor, "X-User", "alice")
	if r.code != http.StatusSeeOther {
		t.Fatalf("the re-run = %s, want 303", r)
	}
	if r = b.do(t, http.MethodGet, r.header.Get("Location"), "", "X-User", "alice"); r.code != http.StatusOK || string(r.body) != "released" {
		t.Errorf("the re-run's response = %s, want 200 released", r)
	}

	// Finished, the original has no recorded request left.
	if r := b.finish(t, asyncreply.DefaultPrefix+running, "X-User", "alice"); r.code != http.StatusSeeOther {
		t.Fatalf("the original = %s, want 303", r)
	}
	p := wantProblem(t, b.adminDo(t, http.MethodPost, "/api/operations/"+running+"/rerun", ""), http.StatusConflict)
	if !strings.Contains(p.Detail, "dropped when an operation finishes") {
		t.Errorf("409 detail = %q, want it to say why", p.Detail)
	}
	wantProblem(t, b.adminDo(t, http.MethodPost, "/api/operations/AAAAAAAAAAAAAAAAAAAAAA/rerun", ""), http.StatusNotFound)
	wantProblem(t, b.adminDo(t, http.MethodGet, "/api/operations/"+running+"/rerun", ""), http.StatusMethodNotAllowed)
	wantProblem(t, b.adminDo(t, http.MethodPost, "/api/operations/"+running+"/explode", ""), http.StatusNotFound)
}

// A browser's cross-origin post is refused, whatever credentials it
// carries; the page's own forms are answered with 303 back to the page,
// which says what was done.
func TestAdminCrossOrigin(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, asyncreply.Config{})
	running, waiting := b.fill(t)
	form := "application/x-www-form-urlencoded"

	for _, header := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
		{"Origin", "http://evil.example"},
	} {
		header = append(header, "Content-Type", form)
		wantProblem(t, b.adminDo(t, http.MethodPost, "/api/operations/"+running+"/cancel", "", header...), http.StatusForbidden)
		wantProblem(t, b.adminDo(t, http.MethodPost, "/api/operations/"+running+"/rerun", "", header...), http.StatusForbidden)
	}
	if s := b.summary(t); len(s.InFlight) != 2 {
		t.Fatalf("in flight after refused posts = %+v, want both still there", s.InFlight)
	}

	r := b.adminDo(t, http.MethodPost, "/api/operations/"+waiting+"/cancel", "",
		"Content-Type", form, "Sec-Fetch-Site", "same-origin", "Origin", b.admin.URL)
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "../../../?canceled="+waiting {
		t.Fatalf("the page's cancel = %d Location %q, want 303 back to the page", r.code, r.header.Get("Location"))
	}
	page := b.adminDo(t, http.MethodGet, "/?canceled="+waiting, "")
	if !strings.Contains(string(page.body), "Operation "+waiting+" canceled.") {
		t.Errorf("the page after cancel does not say so:\n%s", page.body)
	}
	r = b.adminDo(t, http.MethodPost, "/api/operations/"+running+"/rerun", "", "Content-Type", form, "Origin", b.admin.URL)
	newID, ok := strings.CutPrefix(r.header.Get("Location"), "../../../?rerun=")
	if r.code != http.StatusSeeOther || !ok || len(newID) != 22 {
		t.Fatalf("the page's rerun = %d Location %q, want 303 to ?rerun=ID", r.code, r.header.Get("Location"))
	}
}

// The page is server-rendered: readable without a script, its own policy
// and headers, every value escaped.
func TestAdminPage(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, asyncreply.Config{})
	running, waiting := b.fill(t)

	r := b.adminDo(t, http.MethodGet, "/", "", "Accept", "text/html")
	if r.code != http.StatusOK || r.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET / = %s", r)
	}
	for _, h := range []struct{ name, want string }{
		{"Content-Security-Policy", "form-action 'self'"},
		{"Content-Security-Policy", "frame-ancestors 'none'"},
		{"Content-Security-Policy", "script-src 'sha256-"},
		{"X-Content-Type-Options", "nosniff"},
		{"Cache-Control", "no-store"},
	} {
		if !strings.Contains(r.header.Get(h.name), h.want) {
			t.Errorf("%s = %q, want %q in it", h.name, r.header.Get(h.name), h.want)
		}
	}
	body := string(r.body)
	for _, want := range []string{
		`<dd data-count="Succeeded">2</dd>`,
		`<dd data-count="Failed">1</dd>`,
		`<dd data-recent="accepted">5</dd>`,
		`<tr data-id="` + running + `">`,
		`<tr data-id="` + waiting + `">`,
		`<progress max="100" value="40">`,
		"halfway",
		`action="api/operations/` + running + `/rerun"`,
		"502 Upstream unreachable",
		"The report service did not answer.",
		"the recorded request is dropped when an operation finishes, with its credentials",
	} {
		if !strings.Contains(strings.ToLower(body), strings.ToLower(want)) {
			t.Errorf("the page lacks %q", want)
		}
	}
	wantProblem(t, b.adminDo(t, http.MethodPost, "/", ""), http.StatusMethodNotAllowed)
	wantProblem(t, b.adminDo(t, http.MethodGet, "/nothing", ""), http.StatusNotFound)
}

// notLister hides the backend's Lister, as a backend that does not list.
type notLister struct{ backend.Backend }

// Without a backend that lists, the dashboard shows the metrics and says
// that listing is unavailable; the list is a 501.
func TestAdminWithoutLister(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, asyncreply.Config{Backend: notLister{memory.New(memory.Config{})}})
	_, monitor := b.submit(t, http.MethodGet, "/ok/1", "", "X-User", "alice")
	b.finish(t, monitor, "X-User", "alice")

	s := b.summary(t)
	if s.Listing || s.Counts != nil || len(s.InFlight) != 0 || s.Recent.Accepted != 1 {
		t.Errorf("summary = %+v, want no listing, no counts, 1 accepted", s)
	}
	page := b.adminDo(t, http.MethodGet, "/", "")
	if !strings.Contains(string(page.body), "This backend does not list operations") {
		t.Errorf("the page does not say listing is unavailable:\n%s", page.body)
	}
	wantProblem(t, b.adminDo(t, http.MethodGet, "/api/operations", ""), http.StatusNotImplemented)
	if _, ok := scrape(t, b.ar.AdminHandler())["asyncreply_operations"]; ok {
		t.Error("asyncreply_operations exported without a backend that counts")
	}
}

// The by-status gauge counts the store when scraped, and reuses a count
// for StatusCountsTTL.
func TestMetricsOperationsByStatus(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Now()}
	b := setupAdmin(t, asyncreply.WithClock(asyncreply.Config{}, clock.Now))
	for i := range 2 {
		_, monitor := b.submit(t, http.MethodGet, "/ok/"+string(rune('1'+i)), "", "X-User", "alice")
		b.finish(t, monitor, "X-User", "alice")
	}
	metrics := b.ar.AdminHandler() // serves /metrics
	families := scrape(t, metrics)
	for status, want := range map[string]float64{"NotStarted": 0, "Running": 0, "Succeeded": 2, "Failed": 0} {
		if got := metricValue(families, "asyncreply_operations", "status", status); got != want {
			t.Errorf("asyncreply_operations{status=%q} = %v, want %v", status, got, want)
		}
	}
	if got := metricValue(families, "asyncreply_operations_accepted_total", "route", "GET /ok/{id}", "result", "accepted", "code", "202"); got != 2 {
		t.Errorf("accepted = %v, want 2", got)
	}

	b.submit(t, http.MethodGet, "/held/1", "", "X-User", "alice")
	// On one worker, the held replay starts once the others are counted.
	testwait.Recv(t, b.held.started, "the held replay to start")
	families = scrape(t, metrics)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"asyncreply_operations", []string{"status", "Running"}, 0}, // counted before, within the TTL
		{"asyncreply_operations_accepted_total", []string{"route", "GET /held/{id}", "result", "accepted", "code", "202"}, 1},
		{"asyncreply_operations_completed_total", []string{"status", "Succeeded", "code", ""}, 2},
		{"asyncreply_operation_queue_wait_seconds", nil, 3},
		{"asyncreply_operation_run_duration_seconds", nil, 2},
		{"asyncreply_replays_in_flight", nil, 1},
	} {
		if got := metricValue(families, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	clock.advance(asyncreply.StatusCountsTTL)
	if got := metricValue(scrape(t, metrics), "asyncreply_operations", "status", "Running"); got != 1 {
		t.Errorf("Running after the TTL = %v, want 1", got)
	}
}

// downLister is a memory backend whose listing fails while down is set.
type downLister struct {
	*memory.Backend
	down bool
}

func (d *downLister) CountByStatus(ctx context.Context, q backend.CountQuery) (map[backend.Status]int, error) {
	if d.down {
		return nil, backend.ErrUnavailable
	}
	return d.Backend.CountByStatus(ctx, q)
}

// A store that cannot be counted leaves the counts out of the dashboard,
// which says so, and out of a scrape, which still serves every other
// metric and counts the failure.
func TestAdminStoreUnavailable(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, asyncreply.Config{Backend: &downLister{Backend: memory.New(memory.Config{}), down: true}})
	_, monitor := b.submit(t, http.MethodGet, "/ok/1", "", "X-User", "alice")
	b.finish(t, monitor, "X-User", "alice")

	s := b.summary(t)
	if s.Counts != nil || s.Unavailable == "" || s.Recent.Accepted != 1 {
		t.Errorf("summary = %+v, want no counts, the store said unavailable, 1 accepted", s)
	}
	if page := b.adminDo(t, http.MethodGet, "/", ""); page.code != http.StatusOK ||
		!strings.Contains(string(page.body), `<dd data-count="Succeeded">–</dd>`) {
		t.Errorf("the page = %s, want 200 with the counts missing", page)
	}
	families := scrape(t, b.ar.AdminHandler())
	if _, ok := families["asyncreply_operations"]; ok {
		t.Error("asyncreply_operations exported while the store cannot be counted")
	}
	if got := metricValue(families, "asyncreply_backend_errors_total", "method", "CountByStatus"); got != 3 {
		t.Errorf(`asyncreply_backend_errors_total{method="CountByStatus"} = %v, want 3: the summary, the page and the scrape`, got)
	}
	if got := metricValue(families, "asyncreply_operations_accepted_total", "route", "GET /ok/{id}", "result", "accepted", "code", "202"); got != 1 {
		t.Errorf("accepted = %v, want 1", got)
	}
}
