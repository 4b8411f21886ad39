package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"testing"
)

func newTransition(fn func(ctx context.Context, tx *sql.Tx) error) *transition {
	return &transition{ctx: context.Background(), run: fn, done: make(chan error, 1)}
}

// Transitions of one batch run in order in one transaction, each seeing
// the ones before: of two completions of one operation, the first wins.
func TestTransitionsSeeTheOnesBefore(t *testing.T) {
	t.Parallel()
	db := openForCache(t)
	if _, err := db.Exec("CREATE TABLE op (id INTEGER PRIMARY KEY, outcome TEXT); INSERT INTO op (id) VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	won := make([]bool, 2)
	complete := func(i int, outcome string) *transition {
		return newTransition(func(ctx context.Context, tx *sql.Tx) error {
			result, err := tx.ExecContext(ctx, "UPDATE op SET outcome = ? WHERE id = 1 AND outcome IS NULL", outcome)
			if err != nil {
				return err
			}
			n, err := result.RowsAffected()
			won[i] = n == 1
			return err
		})
	}
	first, second := complete(0, "first"), complete(1, "second")
	(&transitions{db: db}).commit([]*transition{first, second})
	if err := errors.Join(<-first.done, <-second.done); err != nil {
		t.Fatal(err)
	}
	if !won[0] || won[1] {
		t.Errorf("won %v, want only the first", won)
	}
	var outcome string
	if err := db.QueryRow("SELECT outcome FROM op WHERE id = 1").Scan(&outcome); err != nil || outcome != "first" {
		t.Errorf("outcome %q (%v), want first", outcome, err)
	}
}

// A transition that fails aborts the shared transaction; the others are
// run again, each alone, and only the failing one fails.
func TestTransitionsOneFailureFailsOnlyItself(t *testing.T) {
	t.Parallel()
	db := openForCache(t)
	if _, err := db.Exec("CREATE TABLE op (id INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	insert := func(id int) *transition {
		return newTransition(func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO op (id) VALUES (?)", id)
			return err
		})
	}
	failure := errors.New("this one fails")
	failing := newTransition(func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO op (id) VALUES (3)"); err != nil {
			return err
		}
		return failure
	})
	before, after := insert(1), insert(2)
	given := newTransition(func(context.Context, *sql.Tx) error {
		t.Error("a transition whose caller gave up before its turn ran")
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	given.ctx = ctx
	(&transitions{db: db}).commit([]*transition{before, failing, given, after})
	if err := <-before.done; err != nil {
		t.Errorf("the transition before the failing one: %v", err)
	}
	if err := <-after.done; err != nil {
		t.Errorf("the transition after the failing one: %v", err)
	}
	if err := <-failing.done; !errors.Is(err, failure) {
		t.Errorf("the failing transition: %v, want its error", err)
	}
	if err := <-given.done; !errors.Is(err, context.Canceled) {
		t.Errorf("the transition given up: %v, want context.Canceled", err)
	}
	var ids []int
	rows, err := db.Query("SELECT id FROM op ORDER BY id")
	ids = queryInts(t, rows, err, 10)
	rows.Close()
	if len(ids) != 2 || ids[0] != 1 || ids[1] != 2 {
		t.Errorf("rows %v, want [1 2]: the failing one's insert rolled back", ids)
	}
}
