package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/internal/riverjob"
)

var _ backend.Notifier = (*Backend)(nil)

// DeliverWith implements backend.Notifier. Deliveries run as River jobs in
// a queue of their own, enqueued in the transaction that makes their
// operation done; a failed attempt snoozes its job until the next.
func (b *Backend) DeliverWith(deliver backend.DeliverFunc) error {
	if err := b.deliveries.DeliverWith(deliver, b.river.Queues()); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	return nil
}

// encodeTargets is how Targets are stored: a JSON array, NULL when empty.
func encodeTargets(targets []string) (sql.NullString, error) {
	if len(targets) == 0 {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(targets)
	return sql.NullString{String: string(b), Valid: true}, err
}

func decodeTargets(s sql.NullString) ([]string, error) {
	if !s.Valid || s.String == "" {
		return nil, nil
	}
	var targets []string
	if err := json.Unmarshal([]byte(s.String), &targets); err != nil {
		return nil, fmt.Errorf("sqlite: stored targets: %w", err)
	}
	return targets, nil
}

// scheduleDeliveries inserts, in tx, a delivery row and its job per
// target of the operation id, which tx makes done with status.
func (b *Backend) scheduleDeliveries(ctx context.Context, tx *sql.Tx, id string, status backend.Status, stored sql.NullString) error {
	targets, err := decodeTargets(stored)
	if err != nil || len(targets) == 0 {
		return err
	}
	jobs := make([]river.InsertManyParams, len(targets))
	for i, target := range targets {
		if _, err := tx.ExecContext(ctx, `INSERT INTO asyncreply_delivery (operation_id, position, target, status)
			VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`, id, i, target, string(status)); err != nil {
			return translate(fmt.Errorf("sqlite: scheduling a delivery: %w", err))
		}
		jobs[i] = river.InsertManyParams{Args: riverjob.DeliveryArgs{OperationID: id, Target: target}}
	}
	// One statement for the jobs of every target: River's insert is the
	// costliest statement of a completion, on the connection accepts wait for.
	if _, err := b.river.InsertManyTx(ctx, tx, jobs); err != nil {
		return translate(fmt.Errorf("sqlite: scheduling the deliveries: %w", err))
	}
	return nil
}

const deliveryColumns = `operation_id, target, status, attempts, last_status, last_error,
	last_attempt_at, delivered_at, gave_up_at`

func scanDelivery(row interface{ Scan(...any) error }) (*backend.Delivery, error) {
	var d backend.Delivery
	var lastAttempt, delivered, gaveUp sql.NullInt64
	if err := row.Scan(&d.OperationID, &d.Target, &d.Status, &d.Attempts, &d.LastStatus, &d.LastError,
		&lastAttempt, &delivered, &gaveUp); err != nil {
		return nil, err
	}
	d.LastAttemptAt, d.DeliveredAt, d.GaveUpAt = optionalTime(lastAttempt), optionalTime(delivered), optionalTime(gaveUp)
	return &d, nil
}

func optionalTime(v sql.NullInt64) (t time.Time) {
	if v.Valid {
		t = fromMicros(v.Int64)
	}
	return t
}

func optionalMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: micros(t), Valid: true}
}

// Deliveries implements backend.Notifier.
func (b *Backend) Deliveries(ctx context.Context, id string) ([]backend.Delivery, error) {
	db, release, err := b.database()
	if err != nil {
		return nil, fmt.Errorf("sqlite: deliveries: %w", err)
	}
	defer release()
	rows, err := db.QueryContext(ctx, "SELECT "+deliveryColumns+" FROM asyncreply_delivery WHERE operation_id = ? ORDER BY position", id)
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: deliveries: %w", err))
	}
	defer rows.Close()
	var ds []backend.Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, translate(fmt.Errorf("sqlite: deliveries: %w", err))
		}
		ds = append(ds, *d)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(fmt.Errorf("sqlite: deliveries: %w", err))
	}
	rows.Close()
	if len(ds) == 0 {
		if err := whyUnchanged(ctx, db, id); !errors.Is(err, backend.ErrFinished) {
			return nil, err
		}
	}
	return ds, nil
}

// loadDelivery implements riverjob.DeliveryStore.Load.
func (b *Backend) loadDelivery(ctx context.Context, id, target string) (*backend.Delivery, error) {
	db, release, err := b.database()
	if err != nil {
		return nil, err
	}
	defer release()
	d, err := scanDelivery(db.QueryRowContext(ctx, "SELECT "+deliveryColumns+
		" FROM asyncreply_delivery WHERE operation_id = ? AND target = ?", id, target))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return d, translate(err)
}

// recordDelivery implements riverjob.DeliveryStore.Record.
func (b *Backend) recordDelivery(ctx context.Context, d *backend.Delivery) error {
	return b.exec(ctx, `UPDATE asyncreply_delivery SET attempts = ?, last_status = ?, last_error = ?,
		last_attempt_at = ?, delivered_at = ?, gave_up_at = ? WHERE operation_id = ? AND target = ?`,
		d.Attempts, d.LastStatus, d.LastError, optionalMicros(d.LastAttemptAt), optionalMicros(d.DeliveredAt),
		optionalMicros(d.GaveUpAt), d.OperationID, d.Target)
}

// rescheduleDeliveries gives a new job to every delivery whose job was
// running in a process that has died (judged as reschedule judges it), and
// cancels the old one, as reschedule does for operations.
func (b *Backend) rescheduleDeliveries(ctx context.Context, tx *sql.Tx, dead string, alive int64) (int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT job.id, json(job.args) FROM river_job AS job
		WHERE job.kind = ? AND job.state = 'running' AND (
			json_extract(job.attempted_by, '$[#-1]') IN (SELECT value FROM json_each(?))
			OR NOT EXISTS (
				SELECT 1 FROM asyncreply_process AS p
				WHERE p.id = json_extract(job.attempted_by, '$[#-1]') AND p.seen_at > ?))`,
		riverjob.DeliveryKind, dead, alive)
	if err != nil {
		return 0, translate(fmt.Errorf("sqlite: sweep: %w", err))
	}
	type lost struct {
		job  int64
		args riverjob.DeliveryArgs
	}
	var found []lost
	for rows.Next() {
		var l lost
		var args []byte
		if err := rows.Scan(&l.job, &args); err != nil {
			rows.Close()
			return 0, translate(fmt.Errorf("sqlite: sweep: %w", err))
		}
		if err := json.Unmarshal(args, &l.args); err != nil {
			rows.Close()
			return 0, fmt.Errorf("sqlite: sweep: a delivery job's arguments: %w", err)
		}
		found = append(found, l)
	}
	if err := rows.Err(); err != nil {
		return 0, translate(fmt.Errorf("sqlite: sweep: %w", err))
	}
	rows.Close()
	for _, l := range found {
		if _, err := b.river.InsertTx(ctx, tx, l.args, riverjob.ResumeOpts()); err != nil {
			return 0, translate(fmt.Errorf("sqlite: sweep: rescheduling a delivery: %w", err))
		}
		if _, err := b.river.JobCancelTx(ctx, tx, l.job); err != nil && !errors.Is(err, rivertype.ErrNotFound) {
			return 0, translate(fmt.Errorf("sqlite: sweep: canceling a lost delivery job: %w", err))
		}
	}
	return len(found), nil
}
