package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"

	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
)

// migrations are applied in order, each once; the number of those applied is
// kept in asyncreply_schema_version. Append, never edit.
//
// Times are INTEGER unix microseconds (UTC by definition) and durations
// INTEGER microseconds, so that they round-trip exactly; STRICT tables keep
// bytes as bytes.
//
// version is the value of the one-row change counter asyncreply_change at the
// operation's last change, 0 before its first (a creation is no change to
// watch). The trigger gives every updated row the next value, in the
// statement that changes it, so that no write can forget to; SQLite lets one
// writer at a time commit, so versions become visible in increasing order,
// and a process that has read every change up to version v finds the later
// ones, whoever made them, with version > v.
var migrations = []string{
	`CREATE TABLE asyncreply_operation (
		id               TEXT PRIMARY KEY NOT NULL,
		owner            TEXT NOT NULL DEFAULT '',
		idempotency_key  TEXT NOT NULL DEFAULT '',
		fingerprint      BLOB,
		status           TEXT NOT NULL,
		progress_percent INTEGER NOT NULL DEFAULT 0,
		progress_message TEXT NOT NULL DEFAULT '',
		attempt          INTEGER NOT NULL DEFAULT 0,
		request          BLOB,
		response         BLOB,
		failure_status   INTEGER,
		failure_title    TEXT,
		failure_detail   TEXT,
		timeout_us       INTEGER NOT NULL,
		retention_us     INTEGER NOT NULL,
		created_at       INTEGER NOT NULL,
		updated_at       INTEGER NOT NULL,
		expires_at       INTEGER,
		job_id           INTEGER NOT NULL,
		version          INTEGER NOT NULL DEFAULT 0
	) STRICT;
	CREATE INDEX asyncreply_operation_idempotency ON asyncreply_operation (owner, idempotency_key)
		WHERE idempotency_key <> '';
	CREATE INDEX asyncreply_operation_expires_at ON asyncreply_operation (expires_at)
		WHERE expires_at IS NOT NULL;
	CREATE INDEX asyncreply_operation_version ON asyncreply_operation (version);

	CREATE TABLE asyncreply_change (version INTEGER NOT NULL) STRICT;
	INSERT INTO asyncreply_change (version) VALUES (0);
	-- The WHEN clause keeps the trigger's own UPDATE from counting again.
	CREATE TRIGGER asyncreply_operation_updated AFTER UPDATE ON asyncreply_operation
	WHEN NEW.version = OLD.version
	BEGIN
		UPDATE asyncreply_change SET version = version + 1;
		UPDATE asyncreply_operation SET version = (SELECT version FROM asyncreply_change) WHERE id = NEW.id;
	END;`,

	// The processes executing operations, each as alive as its last beat.
	`CREATE TABLE asyncreply_process (
		id      TEXT PRIMARY KEY NOT NULL,
		seen_at INTEGER NOT NULL
	) STRICT;`,

	// When the stored response was first collected (its Set-Cookie
	// delivered), NULL until then.
	`ALTER TABLE asyncreply_operation ADD COLUMN collected_at INTEGER;`,

	// The operations waiting to run, counted by Create when it bounds them.
	`CREATE INDEX asyncreply_operation_waiting ON asyncreply_operation (owner)
		WHERE status = 'NotStarted';`,

	// Listings, newest first: an owner's, and an operator's of every owner.
	// SQLite walks either backwards from the page token's (created_at, id).
	`CREATE INDEX asyncreply_operation_owner_created ON asyncreply_operation (owner, created_at, id);
	CREATE INDEX asyncreply_operation_created ON asyncreply_operation (created_at, id);`,

	// Changes in the order they were made: an owner's feed, and the feed
	// poller's of every owner, each walked forwards from its cursor's
	// (updated_at, id).
	`CREATE INDEX asyncreply_operation_owner_updated ON asyncreply_operation (owner, updated_at, id);
	CREATE INDEX asyncreply_operation_updated ON asyncreply_operation (updated_at, id);`,

	// Where each operation's terminal transition is delivered (a JSON
	// array of targets, NULL when none), and each delivery, written in the
	// transaction that makes its operation done, with what its attempts
	// brought.
	`ALTER TABLE asyncreply_operation ADD COLUMN targets TEXT;
	CREATE TABLE asyncreply_delivery (
		operation_id    TEXT NOT NULL,
		position        INTEGER NOT NULL,
		target          TEXT NOT NULL,
		status          TEXT NOT NULL,
		attempts        INTEGER NOT NULL DEFAULT 0,
		last_status     INTEGER NOT NULL DEFAULT 0,
		last_error      TEXT NOT NULL DEFAULT '',
		last_attempt_at INTEGER,
		delivered_at    INTEGER,
		gave_up_at      INTEGER,
		PRIMARY KEY (operation_id, target)
	) STRICT;`,
}

// Migrate applies River's migrations and asyncreply's to db, which must have
// been opened with Open (or with its DSN parameters: transactions that take
// the write lock as they begin, and a busy timeout). New calls it unless
// Config.SkipMigrations is set; operators who prefer an explicit step call
// it themselves.
//
// Processes that start together on one file may migrate at the same time:
// asyncreply's migrations run in one transaction, which SQLite's write lock
// serializes, and a River migration that fails because another process
// applied it first is retried from where that process got.
func Migrate(ctx context.Context, db *sql.DB) error {
	return migrate(ctx, db, nil)
}

func migrate(ctx context.Context, db *sql.DB, logger *slog.Logger) error {
	migrator, err := rivermigrate.New(riversqlite.New(db), &rivermigrate.Config{Logger: logger})
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	if err := migrateRiver(ctx, migrator); err != nil {
		return translate(fmt.Errorf("sqlite: migrate: River's migrations: %w", err))
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return translate(fmt.Errorf("sqlite: migrate: %w", err))
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS asyncreply_schema_version (version INTEGER NOT NULL) STRICT"); err != nil {
		return translate(fmt.Errorf("sqlite: migrate: %w", err))
	}
	var applied int
	if err := tx.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM asyncreply_schema_version").Scan(&applied); err != nil {
		return translate(fmt.Errorf("sqlite: migrate: %w", err))
	}
	if applied >= len(migrations) {
		return nil
	}
	for i := applied; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return translate(fmt.Errorf("sqlite: migrate: migration %d: %w", i+1, err))
		}
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM asyncreply_schema_version"); err != nil {
		return translate(fmt.Errorf("sqlite: migrate: %w", err))
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO asyncreply_schema_version (version) VALUES (?)", len(migrations)); err != nil {
		return translate(fmt.Errorf("sqlite: migrate: %w", err))
	}
	if err := tx.Commit(); err != nil {
		return translate(fmt.Errorf("sqlite: migrate: %w", err))
	}
	return nil
}

// migrateRiver applies River's migrations. River reads which are applied
// before running each in a transaction of its own, so two processes may both
// try one: the second fails (its DDL, or the version's unique row, collides)
// and rolls back. Such a failure is retried as long as another process is
// making progress; one where nothing new got applied is a real one.
func migrateRiver(ctx context.Context, migrator *rivermigrate.Migrator[*sql.Tx]) error {
	for {
		before, err := migrator.ExistingVersions(ctx)
		if err != nil {
			return err
		}
		_, err = migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
		if err == nil {
			return nil
		}
		after, existingErr := migrator.ExistingVersions(ctx)
		if existingErr != nil || len(after) <= len(before) {
			return err
		}
	}
}
