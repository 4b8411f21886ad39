package backendurl_test

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendurl"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/testdb"
)

func TestOpenRejectsBadURLs(t *testing.T) {
	t.Parallel()
	for rawURL, want := range map[string]string{
		"":                  "has no scheme",
		"./ops.db":          "has no scheme",
		"redis://localhost": `unknown scheme "redis"`,
		"postgres://[::1":   "backend URL",
		"mysql://h/db":      `unknown scheme "mysql"`,
	} {
		_, err := backendurl.Open(context.Background(), rawURL, backendurl.Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", rawURL, err, want)
		}
	}
}

func TestOpenMemory(t *testing.T) {
	t.Parallel()
	b, err := backendurl.Open(context.Background(), "memory:", backendurl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.(*memory.Backend); !ok {
		t.Fatalf("memory: opened a %T", b)
	}
}

func TestOpenSQLite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ops.db")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := backendurl.Open(ctx, "sqlite://"+path, backendurl.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(ctx)
	if _, _, err := b.Create(ctx, &backend.Operation{ID: "opened-by-url", CreatedAt: time.Now(), Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the database file was not created at %s: %v", path, err)
	}
}

// A postgres URL with a schema opens a working backend in that schema, and
// the schema parameter does not reach PostgreSQL as a run-time parameter.
func TestOpenPostgres(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, 2)
	schema := testdb.Schema(t, pool)
	u, err := url.Parse(testdb.URL())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("schema", schema)
	u.RawQuery = q.Encode()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := backendurl.Open(ctx, u.String(), backendurl.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(ctx)
	now := time.Now()
	if _, _, err := b.Create(ctx, &backend.Operation{ID: "opened-by-url", CreatedAt: now, Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	var count int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".asyncreply_operation").Scan(&count); err != nil || count != 1 {
		t.Fatalf("operations in schema %s: %d, %v; want 1", schema, count, err)
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
