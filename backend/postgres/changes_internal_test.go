package postgres

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/testdb"
)

// Changes reads from an index, walked forwards from the cursor, and neither
// scans the table nor sorts it: an owner's feed, and the poller's of every
// owner.
func TestChangesPlanUsesAnIndex(t *testing.T) {
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
	// 20,000 operations of 4 owners, changed a second apart, a third done.
	if _, err := pool.Exec(ctx, "INSERT INTO "+b.names.operation+` (id, owner, status, timeout_us, retention_us, created_at, updated_at, expires_at, job_id)
		SELECT 'op-' || n, 'owner-' || (n % 4), CASE WHEN n % 3 = 0 THEN 'Succeeded' ELSE 'Running' END, 0, 0,
			now(), now() - n * interval '1 second', CASE WHEN n % 3 = 0 THEN now() + interval '1 day' END, 0
		FROM generate_series(1, 20000) AS n`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE "+b.names.operation); err != nil {
		t.Fatal(err)
	}
	// The poller's cursor is recent: a few seconds behind now.
	after := backend.ChangeCursor{UpdatedAt: time.Now().Add(-10 * time.Second)}
	for _, c := range []struct {
		what string
		q    backend.ChangeQuery
	}{
		{"an owner's changes", backend.ChangeQuery{Owner: "owner-3", Now: time.Now()}},
		{"every owner's changes", backend.ChangeQuery{AnyOwner: true, Now: time.Now()}},
	} {
		for _, cursor := range []backend.ChangeCursor{{}, after} {
			statement, args := b.changesStatement(c.q, cursor)
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
			t.Logf("%s after %q:\n%s", c.what, cursor, text)
			if !strings.Contains(text, "Index Scan") || strings.Contains(text, "Seq Scan") {
				t.Errorf("%s after %q is not read from an index without a sort:\n%s", c.what, cursor, text)
			}
		}
	}
}
