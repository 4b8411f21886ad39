package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
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
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// encodeTargets is how Targets are stored: a JSON array, NULL when empty.
func encodeTargets(targets []string) (*string, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(targets)
	s := string(b)
	return &s, err
}

func decodeTargets(s *string) ([]string, error) {
	if s == nil || *s == "" {
		return nil, nil
	}
	var targets []string
	if err := json.Unmarshal([]byte(*s), &targets); err != nil {
		return nil, fmt.Errorf("postgres: stored targets: %w", err)
	}
	return targets, nil
}

// scheduleDeliveries inserts, in tx, a delivery row and its job per
// target of the operation id, which tx makes done with status.
func (b *Backend) scheduleDeliveries(ctx context.Context, tx pgx.Tx, id string, status backend.Status, stored *string) error {
	targets, err := decodeTargets(stored)
	if err != nil || len(targets) == 0 {
		return err
	}
	positions := make([]int32, len(targets))
	params := make([]river.InsertManyParams, len(targets))
	for i, target := range targets {
		positions[i] = int32(i)
		params[i] = river.InsertManyParams{Args: riverjob.DeliveryArgs{OperationID: id, Target: target}}
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+b.names.delivery+` (operation_id, position, target, status)
		SELECT $1, p, t, $2 FROM unnest($3::integer[], $4::text[]) AS d(p, t) ON CONFLICT DO NOTHING`,
		id, string(status), positions, targets); err != nil {
		return translate(fmt.Errorf("postgres: scheduling deliveries: %w", err))
	}
	if _, err := b.river.InsertManyTx(ctx, tx, params); err != nil {
		return translate(fmt.Errorf("postgres: scheduling deliveries: %w", err))
	}
	return nil
}

const deliveryColumns = `operation_id, target, status, attempts, last_status, last_error,
	last_attempt_at, delivered_at, gave_up_at`

func scanDelivery(row pgx.Row) (*backend.Delivery, error) {
	var d backend.Delivery
	var lastAttempt, delivered, gaveUp *time.Time
	if err := row.Scan(&d.OperationID, &d.Target, &d.Status, &d.Attempts, &d.LastStatus, &d.LastError,
		&lastAttempt, &delivered, &gaveUp); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		from *time.Time
		to   *time.Time
	}{{lastAttempt, &d.LastAttemptAt}, {delivered, &d.DeliveredAt}, {gaveUp, &d.GaveUpAt}} {
		if f.from != nil {
			*f.to = *f.from
		}
	}
	return &d, nil
}

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Deliveries implements backend.Notifier.
func (b *Backend) Deliveries(ctx context.Context, id string) ([]backend.Delivery, error) {
	rows, err := b.pool.Query(ctx, "SELECT "+deliveryColumns+" FROM "+b.names.delivery+" WHERE operation_id = $1 ORDER BY position", id)
	if err != nil {
		return nil, translate(fmt.Errorf("postgres: deliveries: %w", err))
	}
	defer rows.Close()
	var ds []backend.Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, translate(fmt.Errorf("postgres: deliveries: %w", err))
		}
		ds = append(ds, *d)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(fmt.Errorf("postgres: deliveries: %w", err))
	}
	if len(ds) == 0 {
		if err := b.whyUnchanged(ctx, id); !errors.Is(err, backend.ErrFinished) {
			return nil, err
		}
	}
	return ds, nil
}

// loadDelivery implements riverjob.DeliveryStore.Load.
func (b *Backend) loadDelivery(ctx context.Context, id, target string) (*backend.Delivery, error) {
	d, err := scanDelivery(b.pool.QueryRow(ctx, "SELECT "+deliveryColumns+" FROM "+b.names.delivery+
		" WHERE operation_id = $1 AND target = $2", id, target))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return d, translate(err)
}

// recordDelivery implements riverjob.DeliveryStore.Record.
func (b *Backend) recordDelivery(ctx context.Context, d *backend.Delivery) error {
	_, err := b.pool.Exec(ctx, "UPDATE "+b.names.delivery+` SET attempts = $3, last_status = $4, last_error = $5,
		last_attempt_at = $6, delivered_at = $7, gave_up_at = $8 WHERE operation_id = $1 AND target = $2`,
		d.OperationID, d.Target, d.Attempts, d.LastStatus, d.LastError,
		optionalTime(d.LastAttemptAt), optionalTime(d.DeliveredAt), optionalTime(d.GaveUpAt))
	return translate(err)
}

// rescheduleDeliveries gives a new job, in tx, to every delivery whose job
// was running in a process silent for deadAfter, and cancels the old one,
// as reschedule does for operations.
func (b *Backend) rescheduleDeliveries(ctx context.Context, tx pgx.Tx) (int, error) {
	rows, err := tx.Query(ctx, `SELECT job.id, job.args FROM `+b.names.riverJob+` AS job
		WHERE job.kind = $1 AND job.state = 'running' AND NOT EXISTS (SELECT 1 FROM `+b.names.process+` AS p
			WHERE p.id = job.attempted_by[cardinality(job.attempted_by)]
				AND p.seen_at > now() - $2 * interval '1 microsecond')
		FOR UPDATE OF job SKIP LOCKED`, riverjob.DeliveryKind, b.deadAfter.Microseconds())
	if err != nil {
		return 0, translate(fmt.Errorf("postgres: sweep: %w", err))
	}
	var lost []int64
	var params []river.InsertManyParams
	for rows.Next() {
		var jobID int64
		var raw []byte
		if err := rows.Scan(&jobID, &raw); err != nil {
			rows.Close()
			return 0, translate(fmt.Errorf("postgres: sweep: %w", err))
		}
		var args riverjob.DeliveryArgs
		if err := json.Unmarshal(raw, &args); err != nil {
			rows.Close()
			return 0, fmt.Errorf("postgres: sweep: a delivery job's arguments: %w", err)
		}
		lost = append(lost, jobID)
		params = append(params, river.InsertManyParams{Args: args, InsertOpts: riverjob.ResumeOpts()})
	}
	if err := rows.Err(); err != nil {
		return 0, translate(fmt.Errorf("postgres: sweep: %w", err))
	}
	if len(lost) == 0 {
		return 0, nil
	}
	if _, err := b.river.InsertManyTx(ctx, tx, params); err != nil {
		return 0, translate(fmt.Errorf("postgres: sweep: rescheduling deliveries: %w", err))
	}
	for _, jobID := range lost {
		if _, err := b.river.JobCancelTx(ctx, tx, jobID); err != nil && !errors.Is(err, rivertype.ErrNotFound) {
			return 0, translate(fmt.Errorf("postgres: sweep: canceling a lost delivery job: %w", err))
		}
	}
	return len(lost), nil
}
