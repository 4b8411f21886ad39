package sqlite_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/sqlite"
)

// Operators who migrate as a step of their own call Migrate, then open the
// backend with SkipMigrations: the schema Migrate leaves is the one New
// needs, and migrating again changes nothing.
func TestMigrateAsAnExplicitStep(t *testing.T) {
	t.Parallel()
	path := newPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	unmigrated := newBackendWith(t, sqlite.Config{Path: newPath(t), SkipMigrations: true})
	if _, err := unmigrated.Get(ctx, "no-such-operation"); err == nil || errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Get on a file never migrated = %v, want an error other than not found (no tables)", err)
	}

	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := sqlite.Migrate(ctx, db); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b := newBackendWith(t, sqlite.Config{Path: path, SkipMigrations: true})
	op := newOperation()
	mustCreate(t, b, op)
	if got, err := b.Get(ctx, op.ID); err != nil || got.ID != op.ID {
		t.Errorf("Get after an explicit Migrate = %v, %v; want the operation", got, err)
	}
}
