package postgres_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/internal/testdb"
)

// The all-operations feed of one process on PostgreSQL shows what another
// process accepted and ran; and a change whose transaction commits after a
// later change was read — commit-order skew — is delivered all the same.
func TestFeedAcrossProcessesAndCommitOrderSkew(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, 10)
	schema := testdb.Schema(t, pool)
	owner := func(r *http.Request) (string, error) {
		if u := r.Header.Get("X-User"); u != "" {
			return u, nil
		}
		return "", fmt.Errorf("no X-User")
	}
	serve := func(acceptOnly bool, app http.Handler) string {
		t.Helper()
		be := newBackendWith(t, postgres.Config{Pool: pool, Schema: schema})
		ar, err := asyncreply.New(asyncreply.Config{Backend: be, Owner: owner, AcceptOnly: acceptOnly, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(ar.Handler(app))
		t.Cleanup(func() {
			srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ar.Shutdown(ctx)
		})
		return srv.URL
	}
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "report "+r.PathValue("id"))
	})))
	writer := serve(false, mux)
	reader := serve(true, http.NotFoundHandler())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, reader+asyncreply.DefaultPrefix+"events", nil)
	req.Header.Set("X-User", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET events: %d", resp.StatusCode)
	}
	events := bufio.NewScanner(resp.Body)
	// next returns the next change: the operation's id, status and
	// progress message.
	next := func() (id, status, message string) {
		t.Helper()
		for events.Scan() {
			if data, ok := strings.CutPrefix(events.Text(), "data: "); ok {
				var doc struct {
					ID       string `json:"id"`
					Status   string `json:"status"`
					Progress struct {
						Message string `json:"message"`
					} `json:"progress"`
				}
				if err := json.Unmarshal([]byte(data), &doc); err != nil {
					t.Fatal(err)
				}
				return doc.ID, doc.Status, doc.Progress.Message
			}
		}
		t.Fatalf("the feed ended: %v", events.Err())
		return
	}
	submit := func(n int) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/reports/%d", writer, n), nil)
		req.Header.Set("X-User", "alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		id := loc[strings.LastIndex(loc, "/")+1:]
		for {
			if got, status, _ := next(); got == id && status == "Succeeded" {
				return id
			}
		}
	}
	first, second := submit(1), submit(2)

	// The first operation's change is made in a transaction left open while
	// the second's, half a second later, commits and is read.
	table := pgx.Identifier{schema, "asyncreply_operation"}.Sanitize()
	at := time.Now().Add(time.Second)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "UPDATE "+table+" SET updated_at = $2, progress_message = 'late' WHERE id = $1", first, at); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "UPDATE "+table+" SET updated_at = $2, progress_message = 'early' WHERE id = $1", second, at.Add(500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if id, _, message := next(); id != second || message != "early" {
		t.Fatalf("change %s %q, want the committed one of %s", id, message, second)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if id, _, message := next(); id != first || message != "late" {
		t.Fatalf("change %s %q, want the late commit of %s", id, message, first)
	}
}
