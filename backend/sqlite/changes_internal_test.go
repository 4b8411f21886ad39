package sqlite

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// Changes reads from an index in its order, and neither scans the table
// nor sorts it: an owner's feed, and the poller's of every owner.
func TestChangesPlanUsesAnIndex(t *testing.T) {
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
	// 5,000 operations of 4 owners, changed a second apart, a third done.
	if _, err := db.ExecContext(ctx, `WITH RECURSIVE n(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM n WHERE n < 5000)
		INSERT INTO asyncreply_operation (id, owner, status, timeout_us, retention_us, created_at, updated_at, expires_at, job_id)
		SELECT 'op-' || n, 'owner-' || (n % 4), CASE WHEN n % 3 = 0 THEN 'Succeeded' ELSE 'Running' END, 0, 0,
			?1, ?1 - n * 1000000, CASE WHEN n % 3 = 0 THEN ?1 + 86400000000 END, 0
		FROM n`, micros(time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	after := backend.ChangeCursor{UpdatedAt: time.Now().Add(-time.Hour), ID: "op-3600"}
	for _, c := range []struct {
		what, index string
		q           backend.ChangeQuery
	}{
		{"an owner's changes", "asyncreply_operation_owner_updated", backend.ChangeQuery{Owner: "owner-3", Now: time.Now()}},
		{"every owner's changes", "asyncreply_operation_updated", backend.ChangeQuery{AnyOwner: true, Now: time.Now()}},
	} {
		for _, cursor := range []backend.ChangeCursor{{}, after} {
			statement, args := changesStatement(c.q, cursor)
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
			t.Logf("%s after %q:\n%s", c.what, cursor, text)
			if !strings.Contains(text, "USING INDEX "+c.index) || strings.Contains(text, "TEMP B-TREE") {
				t.Errorf("%s after %q is not read from %s without a sort:\n%s", c.what, cursor, c.index, text)
			}
		}
	}
}
