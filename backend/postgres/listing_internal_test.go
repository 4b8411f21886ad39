package postgres

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/internal/listing"
	"github.com/asyncreply/asyncreply/internal/testdb"
)

// List reads a page from an index, walked backwards from the cursor, and
// neither scans the table nor sorts it, however many operations it holds:
// a caller's listing, and an operator's of every owner.
func TestListPlanUsesAnIndex(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, 4)
	schema := testdb.Schema(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := New(ctx, Config{Pool: pool, Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(ctx)
	// 20,000 operations of 4 owners, a minute apart, a third done: owners
	// with thousands of operations, whose listing an index must spare a sort.
	if _, err := pool.Exec(ctx, "INSERT INTO "+b.names.operation+` (id, owner, status, timeout_us, retention_us, created_at, updated_at, expires_at, job_id)
		SELECT 'op-' || n, 'owner-' || (n % 4), CASE WHEN n % 3 = 0 THEN 'Succeeded' ELSE 'NotStarted' END, 0, 0,
			now() - n * interval '1 minute', now(), CASE WHEN n % 3 = 0 THEN now() + interval '1 day' END, 0
		FROM generate_series(1, 20000) AS n`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE "+b.names.operation); err != nil {
		t.Fatal(err)
	}
	cursor := listing.Cursor{CreatedAt: time.Now().Add(-100 * time.Hour), ID: "op-6000"}
	for _, c := range []struct {
		what string
		q    backend.ListQuery
	}{
		{"an owner's listing", backend.ListQuery{Owner: "owner-3", Now: time.Now()}},
		{"an owner's listing of one status, bounded in time", backend.ListQuery{Owner: "owner-3", Statuses: []backend.Status{backend.Succeeded},
			CreatedAfter: time.Now().Add(-300 * time.Hour), CreatedBefore: time.Now().Add(-10 * time.Hour), Now: time.Now()}},
		{"an operator's listing", backend.ListQuery{AnyOwner: true, Now: time.Now()}},
	} {
		for _, paging := range []bool{false, true} {
			statement, args := b.listStatement(c.q, cursor, paging)
			rows, err := pool.Query(ctx, "EXPLAIN "+statement, args...)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			text := strings.Join(plan, "\n")
			t.Logf("%s (paging %v):\n%s", c.what, paging, text)
			if !strings.Contains(text, "Index Scan Backward") || strings.Contains(text, "Sort") || strings.Contains(text, "Seq Scan") {
				t.Errorf("%s (paging %v) is not read backwards from an index without a sort:\n%s", c.what, paging, text)
			}
		}
	}
}
