package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
)

func openForCache(t *testing.T) *sql.DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// cached is how many statements db's one connection keeps prepared.
func cached(t *testing.T, db *sql.DB) int {
	t.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n := -1
	if err := conn.Raw(func(dc any) error {
		c := dc.(*stmtCacheConn)
		c.mu.Lock()
		defer c.mu.Unlock()
		n = c.recent.Len()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func queryInts(t *testing.T, rows *sql.Rows, err error, n int) []int {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for len(got) < n && rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	return got
}

// A statement run again is the one prepared before, with the new
// arguments.
func TestStmtCacheReuses(t *testing.T) {
	t.Parallel()
	db := openForCache(t)
	for i := range 3 {
		var v int
		if err := db.QueryRow("SELECT ? + 1", i).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != i+1 {
			t.Fatalf("SELECT %d + 1 = %d", i, v)
		}
	}
	if n := cached(t, db); n != 1 {
		t.Errorf("%d statements cached, want 1", n)
	}
}

// A statement whose rows are still being read is not reset under them by
// a second use of the same text: the second prepares its own.
func TestStmtCacheSameQueryWhileRowsOpen(t *testing.T) {
	t.Parallel()
	db := openForCache(t)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	const q = "SELECT value FROM json_each(?)"
	first, err := tx.Query(q, "[1, 2, 3]")
	got := queryInts(t, first, err, 1)
	second, err := tx.Query(q, "[4, 5]")
	if inner := queryInts(t, second, err, 10); !slices.Equal(inner, []int{4, 5}) {
		t.Errorf("second query read %v, want [4 5]", inner)
	}
	second.Close()
	got = append(got, queryInts(t, first, nil, 10)...)
	if err := first.Err(); err != nil {
		t.Fatal(err)
	}
	first.Close()
	if !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("first query read %v, want [1 2 3]", got)
	}
}

// A prepared statement follows a change of the schema.
func TestStmtCacheSchemaChange(t *testing.T) {
	t.Parallel()
	db := openForCache(t)
	if _, err := db.Exec("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	columns := func() []string {
		rows, err := db.Query("SELECT * FROM t")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		c, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := columns(); !slices.Equal(c, []string{"a"}) {
		t.Fatalf("columns %v, want [a]", c)
	}
	if _, err := db.Exec("ALTER TABLE t ADD COLUMN b INTEGER"); err != nil {
		t.Fatal(err)
	}
	if c := columns(); !slices.Equal(c, []string{"a", "b"}) {
		t.Errorf("columns after ALTER TABLE %v, want [a b]", c)
	}
}

// The cache keeps at most stmtCacheSize statements, the most recent.
func TestStmtCacheBounded(t *testing.T) {
	t.Parallel()
	db := openForCache(t)
	for i := range stmtCacheSize + 10 {
		var v int
		if err := db.QueryRow(fmt.Sprintf("SELECT %d", i)).Scan(&v); err != nil || v != i {
			t.Fatalf("SELECT %d: %d, %v", i, v, err)
		}
	}
	if n := cached(t, db); n != stmtCacheSize {
		t.Errorf("%d statements cached, want %d", n, stmtCacheSize)
	}
}

// A prepared PRAGMA runs again each time: durably's switch to
// synchronous=FULL and back takes effect however often it is made.
func TestStmtCachePragmasTakeEffect(t *testing.T) {
	t.Parallel()
	db := openForCache(t)
	for i, full := range []bool{true, false, true, false, true} {
		set, want := "PRAGMA synchronous = NORMAL", 1
		if full {
			set, want = "PRAGMA synchronous = FULL", 2
		}
		if _, err := db.Exec(set); err != nil {
			t.Fatal(err)
		}
		var got int
		if err := db.QueryRow("PRAGMA synchronous").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("after %q, the %dth: synchronous = %d, want %d", set, i+1, got, want)
		}
	}
}
