package postgres

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// migrations are applied in order, each once; the number of those applied is
// kept in asyncreply_schema_version. Append, never edit.
var migrations = []string{
	`CREATE TABLE {{.operation}} (
		id               text PRIMARY KEY,
		owner            text NOT NULL DEFAULT '',
		idempotency_key  text NOT NULL DEFAULT '',
		fingerprint      bytea,
		status           text NOT NULL,
		progress_percent integer NOT NULL DEFAULT 0,
		progress_message text NOT NULL DEFAULT '',
		attempt          integer NOT NULL DEFAULT 0,
		request          bytea,
		response         bytea,
		failure_status   integer,
		failure_title    text,
		failure_detail   text,
		timeout_us       bigint NOT NULL,
		retention_us     bigint NOT NULL,
		created_at       timestamptz NOT NULL,
		updated_at       timestamptz NOT NULL,
		expires_at       timestamptz,
		job_id           bigint NOT NULL
	);
	CREATE INDEX ON {{.operation}} (owner, idempotency_key) WHERE idempotency_key <> '';
	CREATE INDEX ON {{.operation}} (expires_at) WHERE expires_at IS NOT NULL;`,

	// The processes executing operations, each as alive as its last beat.
	`CREATE TABLE {{.process}} (
		id      text PRIMARY KEY,
		seen_at timestamptz NOT NULL
	);`,

	// When the stored response was first collected (its Set-Cookie
	// delivered), NULL until then.
	`ALTER TABLE {{.operation}} ADD COLUMN collected_at timestamptz;`,

	// The operations waiting to run, counted by Create when it bounds them.
	`CREATE INDEX ON {{.operation}} (owner) WHERE status = 'NotStarted';`,

	// Listings, newest first: an owner's, and an operator's of every owner,
	// each walked backwards from the page token's (created_at, id). IDs
	// compare bytewise (COLLATE "C"), as in every backend, whatever the
	// database's collation.
	`CREATE INDEX ON {{.operation}} (owner, created_at, id COLLATE "C");
	CREATE INDEX ON {{.operation}} (created_at, id COLLATE "C");`,

	// Changes in the order they were made: an owner's feed, and the feed
	// poller's of every owner, each walked forwards from its cursor's
	// (updated_at, id).
	`CREATE INDEX ON {{.operation}} (owner, updated_at, id COLLATE "C");
	CREATE INDEX ON {{.operation}} (updated_at, id COLLATE "C");`,

	// Where each operation's terminal transition is delivered (a JSON
	// array of targets, NULL when none), and each delivery, written in the
	// transaction that makes its operation done, with what its attempts
	// brought; swept with its operation.
	`ALTER TABLE {{.operation}} ADD COLUMN targets text;
	CREATE TABLE {{.delivery}} (
		operation_id    text NOT NULL REFERENCES {{.operation}} (id) ON DELETE CASCADE,
		position        integer NOT NULL,
		target          text NOT NULL,
		status          text NOT NULL,
		attempts        integer NOT NULL DEFAULT 0,
		last_status     integer NOT NULL DEFAULT 0,
		last_error      text NOT NULL DEFAULT '',
		last_attempt_at timestamptz,
		delivered_at    timestamptz,
		gave_up_at      timestamptz,
		PRIMARY KEY (operation_id, target)
	);`,
}

// Migrate applies asyncreply's and River's migrations to schema (which it
// creates if needed), under an advisory lock so that processes starting
// together do not race. New calls it unless Config.SkipMigrations is set;
// operators who prefer an explicit step call it themselves.
//
// Migrations run under the pool's statement_timeout, as every statement
// does (see ConfigurePool). One that needs longer — a River upgrade that
// builds an index over a large job table, say — is applied with a pool
// whose URL sets statement_timeout=0.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	schema = schemaOrDefault(schema)
	// A session lock, held on a connection of its own: River applies each of
	// its migrations in a transaction of its own, which one transaction-level
	// lock could not cover.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return translate(fmt.Errorf("postgres: migrate: %w", err))
	}
	defer conn.Release()
	lock := fnv.New64a()
	lock.Write([]byte("asyncreply migrate " + schema))
	if err := advisoryLock(ctx, conn, int64(lock.Sum64())); err != nil {
		return translate(fmt.Errorf("postgres: migrate: %w", err))
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(lock.Sum64()))

	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
		return fmt.Errorf("postgres: migrate: creating schema %q: %w", schema, err)
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: schema})
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("postgres: migrate: River's migrations: %w", err)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		return translate(fmt.Errorf("postgres: migrate: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	names := newTableNames(schema)
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+names.version+" (version integer NOT NULL)"); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	var applied int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+names.version).Scan(&applied); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if applied >= len(migrations) {
		return nil
	}
	for i := applied; i < len(migrations); i++ {
		if _, err := tx.Exec(ctx, names.expand(migrations[i])); err != nil {
			return fmt.Errorf("postgres: migrate: migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.Exec(ctx, "DELETE FROM "+names.version); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+names.version+" (version) VALUES ($1)", len(migrations)); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return translate(fmt.Errorf("postgres: migrate: %w", err))
	}
	return nil
}

// advisoryLock takes the session advisory lock key, waiting for as long as
// ctx allows while another process holds it: the server's lock_timeout and
// statement_timeout, which bound every other wait, would fail a process
// that starts while another applies a long migration.
func advisoryLock(ctx context.Context, conn *pgxpool.Conn, key int64) error {
	for {
		var locked bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&locked); err != nil {
			return err
		}
		if locked {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
