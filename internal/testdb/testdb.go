// Package testdb gives tests a real PostgreSQL to work in: each test gets a
// schema of its own, dropped when it ends. The server is the one at
// TEST_DATABASE_URL, or the usual local one. A test without a server is
// skipped, with a message saying how to provide one, except in CI (CI set),
// where it fails: there, a missing database is a broken build, not a reason
// to pass.
package testdb

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultURL is where tests look for PostgreSQL when TEST_DATABASE_URL is
// not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// URL returns the database URL tests use.
func URL() string { return cmp.Or(os.Getenv("TEST_DATABASE_URL"), DefaultURL) }

// Pool returns a pool on the test database, closed when the test ends, or
// skips (fails in CI) the test when the database cannot be reached.
func Pool(t testing.TB, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(URL())
	if err != nil {
		t.Fatalf("TEST_DATABASE_URL: %v", err)
	}
	cfg.MaxConns = maxConns
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL is required in CI and unreachable at %s: %v", URL(), err)
		}
		t.Skipf("PostgreSQL unreachable at %s (%v); set TEST_DATABASE_URL to run this test", URL(), err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Schema returns the name of a new, unique schema, dropped with everything
// in it when the test ends. It is created by whoever migrates it.
func Schema(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	schema := "test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("dropping test schema %s: %v", schema, err)
		}
	})
	return schema
}
