package sqlite

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/internal/listing"
)

// List reads a page from an index in its order, and neither scans the table
// nor sorts it, however many operations it holds: a caller's listing, and
// an operator's of every owner.
func TestListPlanUsesAnIndex(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := New(ctx, Config{Path: filepath.Join(t.TempDir(), "asyncreply.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(ctx)
	db, release, err := b.database()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	// 5,000 operations of 4 owners, a minute apart, a third done.
	if _, err := db.ExecContext(ctx, `WITH RECURSIVE n(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM n WHERE n < 5000)
		INSERT INTO asyncreply_operation (id, owner, status, timeout_us, retention_us, created_at, updated_at, expires_at, job_id)
		SELECT 'op-' || n, 'owner-' || (n % 4), CASE WHEN n % 3 = 0 THEN 'Succeeded' ELSE 'NotStarted' END, 0, 0,
			?1 - n * 60000000, ?1, CASE WHEN n % 3 = 0 THEN ?1 + 86400000000 END, 0
		FROM n`, micros(time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	cursor := listing.Cursor{CreatedAt: time.Now().Add(-50 * time.Hour), ID: "op-3000"}
	for _, c := range []struct {
		what, index string
		q           backend.ListQuery
	}{
		{"an owner's listing", "asyncreply_operation_owner_created", backend.ListQuery{Owner: "owner-3", Now: time.Now()}},
		{"an owner's listing of one status, bounded in time", "asyncreply_operation_owner_created", backend.ListQuery{Owner: "owner-3",
			Statuses: []backend.Status{backend.Succeeded}, CreatedAfter: time.Now().Add(-300 * time.Hour), CreatedBefore: time.Now().Add(-10 * time.Hour), Now: time.Now()}},
		{"an operator's listing", "asyncreply_operation_created", backend.ListQuery{AnyOwner: true, Now: time.Now()}},
	} {
		for _, paging := range []bool{false, true} {
			statement, args := listStatement(c.q, cursor, paging)
			rows, err := db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+statement, args...)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			text := strings.Join(plan, "\n")
			t.Logf("%s (paging %v):\n%s", c.what, paging, text)
			if !strings.Contains(text, "USING INDEX "+c.index) || strings.Contains(text, "TEMP B-TREE") {
				t.Errorf("%s (paging %v) is not read from %s without a sort:\n%s", c.what, paging, c.index, text)
			}
		}
	}
}
