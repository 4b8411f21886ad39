// Package postgres is the PostgreSQL backend: operations live in a table,
// run as River jobs, and any number of processes on any number of machines
// share them.
//
// Accepting an operation is one transaction that inserts its row and its
// River job, so a 202 is never sent for an operation that is not both stored
// and scheduled. River executes it at least once: when a worker dies, River
// rescues the job once its timeout has passed and another worker replays it;
// the first completed attempt's outcome is the one stored. Changes are
// announced with NOTIFY, so long-polls and event streams in every process
// wake within milliseconds.
package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/internal/admission"
	"github.com/asyncreply/asyncreply/backend/internal/groupcommit"
	"github.com/asyncreply/asyncreply/backend/internal/listing"
	"github.com/asyncreply/asyncreply/backend/internal/riverjob"
	"github.com/asyncreply/asyncreply/backend/internal/watch"
)

// Defaults of Config's fields.
const (
	DefaultSchema      = "public"
	DefaultConcurrency = 100
	DefaultRescueAfter = time.Minute

	DefaultHeartbeatInterval = riverjob.DefaultHeartbeatInterval
)

// Config configures a PostgreSQL backend.
type Config struct {
	// Pool is the connection pool to use. Required. The backend holds one
	// connection for LISTEN on top of River's and its own queries. Prepare
	// its configuration with ConfigurePool, as backendurl.Open does: without
	// its timeouts, a database that accepts connections but never answers
	// holds calls and connections for minutes, and the service stays
	// unavailable long after the database is back.
	Pool *pgxpool.Pool

	// Schema holds the backend's table and River's. Defaults to
	// DefaultSchema.
	Schema string

	// Concurrency is how many operations this process executes at once.
	// Defaults to DefaultConcurrency.
	Concurrency int

	// RescueAfter is how long a running job must have run before River may
	// consider its worker dead and run it again; it is also never before the
	// operation's own timeout has passed. Defaults to DefaultRescueAfter.
	RescueAfter time.Duration

	// HeartbeatInterval is how often a process executing operations records
	// that it is alive. The operations of a process silent for six
	// intervals are run again by the others (at their next Sweep), rather
	// than once River's rescue delay and their timeout have passed. A
	// shorter interval recovers sooner and writes more: each process
	// upserts its record once per interval (100 processes at 1 s, 100
	// writes a second), and a dead process's operations run again about six
	// intervals plus the sweep interval after it died (30 s + 15 s by
	// default). Every process sharing the schema should use the same value.
	// Defaults to DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration

	// SkipMigrations leaves the schema as it is; use it when migrations are
	// applied by an explicit Migrate step. Defaults to false: New migrates.
	SkipMigrations bool

	// Logger receives River's logs and the backend's. Defaults to
	// slog.Default().
	Logger *slog.Logger

	// MaxQueued bounds the operations waiting to run, those of every
	// process sharing the schema: past it, Create stores nothing and
	// returns backend.ErrQueueFull. With a bound, Creates take turns on an
	// advisory lock of the schema between counting and committing, so that
	// processes accepting together never pass it. Every process that
	// accepts should use the same value. Defaults to 0: no bound, the queue
	// being on disk.
	MaxQueued int

	// MaxQueuedPerOwner bounds the operations of one owner waiting to run:
	// past it, Create stores nothing and returns backend.ErrOwnerQueueFull,
	// while other owners are still accepted. Operations without an owner
	// count only towards MaxQueued. Defaults to 0: no bound per owner.
	MaxQueuedPerOwner int
}

// Backend is a PostgreSQL backend.Backend. Create it with New.
type Backend struct {
	pool   *pgxpool.Pool
	names  tableNames
	river  *river.Client[pgx.Tx]
	worker *riverjob.Worker
	// deliveries makes the deliveries of backend.Notifier.
	deliveries *riverjob.DeliveryWorker
	logger     *slog.Logger

	rescueAfter time.Duration
	deadAfter   time.Duration // a process silent this long is dead
	limits      admission.Limits

	watchers     watch.Hub
	creates      *groupcommit.Committer
	createMu     sync.RWMutex // held for reading while a Create uses creates
	createsEnded bool         // Stop has stopped creates: Creates go alone
	stopListener context.CancelFunc
	listening    sync.WaitGroup
	stopOnce     sync.Once
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Lister  = (*Backend)(nil)

	_ backend.ChangeLister = (*Backend)(nil)
)

// New returns a backend on cfg.Pool, migrating its schema first unless
// cfg.SkipMigrations is set. It starts listening for changes at once, so
// that watchers in a process that only accepts are woken too; Stop ends that.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Pool == nil {
		return nil, errors.New("postgres: Config.Pool is required")
	}
	cfg.Schema = schemaOrDefault(cfg.Schema)
	cfg.Concurrency = cmp.Or(max(cfg.Concurrency, 0), DefaultConcurrency)
	cfg.RescueAfter = cmp.Or(max(cfg.RescueAfter, 0), DefaultRescueAfter)
	cfg.HeartbeatInterval = cmp.Or(max(cfg.HeartbeatInterval, 0), DefaultHeartbeatInterval)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if !cfg.SkipMigrations {
		if err := Migrate(ctx, cfg.Pool, cfg.Schema); err != nil {
			return nil, err
		}
	}
	b := &Backend{
		pool: cfg.Pool, names: newTableNames(cfg.Schema), logger: cfg.Logger,
		rescueAfter: cfg.RescueAfter, deadAfter: riverjob.DeadAfter(cfg.HeartbeatInterval),
		limits: admission.Limits{Queued: cfg.MaxQueued, QueuedPerOwner: cfg.MaxQueuedPerOwner},
	}
	id := riverjob.NewID()
	b.worker = riverjob.NewWorker(b.Complete, riverjob.Liveness{
		ID:       id,
		Interval: cfg.HeartbeatInterval,
		Beat: func(ctx context.Context) error {
			_, err := b.pool.Exec(ctx, "INSERT INTO "+b.names.process+` (id, seen_at) VALUES ($1, now())
				ON CONFLICT (id) DO UPDATE SET seen_at = now()`, id)
			return translate(err)
		},
		Forget: func(ctx context.Context) error {
			_, err := b.pool.Exec(ctx, "DELETE FROM "+b.names.process+" WHERE id = $1", id)
			return translate(err)
		},
	})
	b.deliveries = riverjob.NewDeliveryWorker(riverjob.DeliveryStore{Load: b.loadDelivery, Record: b.recordDelivery})
	client, err := riverjob.NewClient(riverpgxv5.New(cfg.Pool), b.worker, riverjob.ClientConfig{
		Concurrency: cfg.Concurrency, RescueAfter: cfg.RescueAfter,
		Schema: cfg.Schema, Logger: cfg.Logger, Deliveries: b.deliveries,
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	b.river = client

	b.creates = groupcommit.Start(groupcommit.Funcs{Together: b.createTogether, Alone: b.createOne})
	listenCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.stopListener = cancel
	b.listening.Add(1)
	go b.listen(listenCtx)
	return b, nil
}

// columns are read in this order by scanOperation.
const columns = `id, owner, idempotency_key, fingerprint, status, progress_percent, progress_message,
	attempt, request, response, failure_status, failure_title, failure_detail,
	timeout_us, retention_us, created_at, updated_at, expires_at, collected_at, targets`

func scanOperation(row pgx.Row) (*backend.Operation, error) {
	var (
		op                          backend.Operation
		failureStatus               *int
		failureTitle, failureDetail *string
		timeoutUS, retentionUS      int64
		expiresAt, collectedAt      *time.Time
		targets                     *string
	)
	err := row.Scan(&op.ID, &op.Owner, &op.IdempotencyKey, &op.Fingerprint, &op.Status,
		&op.Progress.Percent, &op.Progress.Message, &op.Attempt, &op.Request, &op.Response,
		&failureStatus, &failureTitle, &failureDetail, &timeoutUS, &retentionUS,
		&op.CreatedAt, &op.UpdatedAt, &expiresAt, &collectedAt, &targets)
	if err != nil {
		return nil, err
	}
	if op.Targets, err = decodeTargets(targets); err != nil {
		return nil, err
	}
	if failureStatus != nil {
		op.Failure = &backend.Failure{Status: *failureStatus, Title: deref(failureTitle), Detail: deref(failureDetail)}
	}
	op.Timeout = time.Duration(timeoutUS) * time.Microsecond
	op.Retention = time.Duration(retentionUS) * time.Microsecond
	if expiresAt != nil {
		op.ExpiresAt = *expiresAt
	}
	if collectedAt != nil {
		op.CollectedAt = *collectedAt
	}
	return &op, nil
}

// Create implements backend.Backend: the operation's row and its River job
// are inserted in one transaction. Creates without an idempotency key that
// arrive together share a transaction (group commit): one statement inserts
// their jobs, one their rows.
func (b *Backend) Create(ctx context.Context, op *backend.Operation) (*backend.Operation, bool, error) {
	b.createMu.RLock()
	defer b.createMu.RUnlock()
	if op.IdempotencyKey != "" || b.createsEnded {
		return b.createAlone(ctx, op)
	}
	r := b.creates.Create(ctx, op)
	if r.Err != nil {
		return nil, false, translate(r.Err)
	}
	return r.Stored, r.Created, nil
}

// createAlone creates op in a transaction of its own, taking a lock on its
// idempotency key so that Creates with the same key, in any process, wait
// for each other and exactly one inserts.
func (b *Backend) createAlone(ctx context.Context, op *backend.Operation) (*backend.Operation, bool, error) {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return nil, false, translate(fmt.Errorf("postgres: create: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if op.IdempotencyKey != "" {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", op.Owner+"\x1f"+op.IdempotencyKey); err != nil {
			return nil, false, translate(fmt.Errorf("postgres: create: %w", err))
		}
		existing, err := scanOperation(tx.QueryRow(ctx, "SELECT "+columns+" FROM "+b.names.operation+
			` WHERE owner = $1 AND idempotency_key = $2 AND status <> 'Canceled' AND (expires_at IS NULL OR expires_at > $3)
			ORDER BY created_at DESC LIMIT 1`, op.Owner, op.IdempotencyKey, op.CreatedAt))
		switch {
		case err == nil:
			return existing, false, translate(tx.Commit(ctx))
		case !errors.Is(err, pgx.ErrNoRows):
			return nil, false, translate(fmt.Errorf("postgres: create: %w", err))
		}
	}
	tally, err := b.tally(ctx, tx, []*backend.Operation{op})
	if err != nil {
		return nil, false, err
	}
	if err := tally.Admit(op.Owner); err != nil {
		return nil, false, fmt.Errorf("postgres: create: %w", err)
	}
	stored, err := b.insert(ctx, tx, []*backend.Operation{op})
	if err != nil {
		return nil, false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, false, translate(fmt.Errorf("postgres: create: %w", err))
	}
	return stored[0], true, nil
}

// createTogether implements groupcommit.Funcs.Together. An operation
// refused admission gets its refusal as its result; its batch-mates are
// created.
func (b *Backend) createTogether(ctx context.Context, batch []groupcommit.Request) ([]groupcommit.Result, error) {
	results := make([]groupcommit.Result, len(batch))
	var ops []*backend.Operation
	var positions []int
	for i, req := range batch {
		if err := req.Ctx.Err(); err != nil {
			results[i].Err = err // given up: not inserted
			continue
		}
		ops = append(ops, req.Op)
		positions = append(positions, i)
	}
	if len(ops) == 0 {
		return results, nil
	}
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return nil, translate(fmt.Errorf("postgres: create: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	tally, err := b.tally(ctx, tx, ops)
	if err != nil {
		return nil, err
	}
	if tally != nil {
		var admitted []*backend.Operation
		var admittedAt []int
		for i, op := range ops {
			if err := tally.Admit(op.Owner); err != nil {
				results[positions[i]].Err = fmt.Errorf("postgres: create: %w", err)
				continue
			}
			admitted, admittedAt = append(admitted, op), append(admittedAt, positions[i])
		}
		ops, positions = admitted, admittedAt
		if len(ops) == 0 {
			return results, nil
		}
	}
	stored, err := b.insert(ctx, tx, ops)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, translate(fmt.Errorf("postgres: create: %w", err))
	}
	for i, op := range stored {
		results[positions[i]] = groupcommit.Result{Stored: op, Created: true}
	}
	return results, nil
}

// tally counts, for a transaction that creates ops, the operations waiting
// to run in the schema and of the owners of ops, or returns nil when no
// bound is set, at no cost. It first takes the schema's admission lock,
// held until the transaction ends, so that Creates in every process count
// and insert one after the other and never pass a bound together; the
// lock and the counts go in one round trip. Each count stops at its bound
// and reads the partial index of waiting operations: it costs about what
// waits, plus the entries of operations that have left since autovacuum
// last cleared them.
func (b *Backend) tally(ctx context.Context, tx pgx.Tx, ops []*backend.Operation) (*admission.Tally, error) {
	if !b.limits.Bounded() {
		return nil, nil
	}
	owners := b.limits.Owners(ops)
	var batch pgx.Batch
	batch.Queue("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "asyncreply admission "+b.names.operation)
	// A statement of its own, after the lock: its snapshot then holds
	// every Create committed before the lock was granted.
	batch.Queue(`SELECT
			(SELECT count(*) FROM (SELECT FROM `+b.names.operation+` WHERE status = 'NotStarted' LIMIT $1) AS waiting),
			ARRAY(SELECT (SELECT count(*) FROM (SELECT FROM `+b.names.operation+` AS op
					WHERE op.status = 'NotStarted' AND op.owner = owners.owner LIMIT $2) AS waiting)
				FROM unnest($3::text[]) WITH ORDINALITY AS owners(owner, i) ORDER BY owners.i)`,
		max(b.limits.Queued, 0), max(b.limits.QueuedPerOwner, 0), owners)
	results := tx.SendBatch(ctx, &batch)
	var total int
	var ownerCounts []int
	_, err := results.Exec()
	if err == nil {
		err = results.QueryRow().Scan(&total, &ownerCounts)
	}
	if closeErr := results.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return nil, translate(fmt.Errorf("postgres: create: counting the operations waiting to run: %w", err))
	}
	counts := make(map[string]int, len(owners))
	for i, owner := range owners {
		counts[owner] = ownerCounts[i]
	}
	return admission.NewTally(b.limits, total, counts), nil
}

// createOne implements groupcommit.Funcs.Alone.
func (b *Backend) createOne(req groupcommit.Request) groupcommit.Result {
	stored, created, err := b.createAlone(req.Ctx, req.Op)
	return groupcommit.Result{Stored: stored, Created: created, Err: err}
}

// insert inserts ops and their River jobs in tx, two statements whatever
// their number, and returns them as stored.
func (b *Backend) insert(ctx context.Context, tx pgx.Tx, ops []*backend.Operation) ([]*backend.Operation, error) {
	params := make([]river.InsertManyParams, len(ops))
	for i, op := range ops {
		params[i] = river.InsertManyParams{Args: riverjob.Args{OperationID: op.ID, Timeout: op.Timeout}}
	}
	jobs, err := b.river.InsertManyTx(ctx, tx, params)
	if err != nil {
		return nil, translate(fmt.Errorf("postgres: create: inserting the jobs: %w", err))
	}
	var (
		stored                       = make([]*backend.Operation, len(ops))
		ids, owners, keys, statuses  = make([]string, len(ops)), make([]string, len(ops)), make([]string, len(ops)), make([]string, len(ops))
		fingerprints, requests       = make([][]byte, len(ops)), make([][]byte, len(ops))
		timeouts, retentions, jobIDs = make([]int64, len(ops)), make([]int64, len(ops)), make([]int64, len(ops))
		createdAts, updatedAts       = make([]time.Time, len(ops)), make([]time.Time, len(ops))
		targets                      = make([]*string, len(ops))
	)
	for i, op := range ops {
		s := *op
		s.Status, s.Attempt, s.Progress = backend.NotStarted, 0, backend.Progress{}
		s.Response, s.Failure, s.ExpiresAt, s.CollectedAt = nil, nil, time.Time{}, time.Time{}
		s.CreatedAt = s.CreatedAt.Truncate(time.Microsecond)
		s.UpdatedAt = cmp.Or(s.UpdatedAt, s.CreatedAt).Truncate(time.Microsecond)
		stored[i] = &s
		ids[i], owners[i], keys[i], statuses[i] = s.ID, s.Owner, s.IdempotencyKey, string(s.Status)
		fingerprints[i], requests[i] = s.Fingerprint, s.Request
		timeouts[i], retentions[i], jobIDs[i] = s.Timeout.Microseconds(), s.Retention.Microseconds(), jobs[i].Job.ID
		createdAts[i], updatedAts[i] = s.CreatedAt, s.UpdatedAt
		s.Targets = slices.Clone(op.Targets)
		if targets[i], err = encodeTargets(s.Targets); err != nil {
			return nil, fmt.Errorf("postgres: create: %w", err)
		}
	}
	_, err = tx.Exec(ctx, "INSERT INTO "+b.names.operation+` (id, owner, idempotency_key, fingerprint, status,
		request, timeout_us, retention_us, created_at, updated_at, job_id, targets)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::bytea[],
			$7::bigint[], $8::bigint[], $9::timestamptz[], $10::timestamptz[], $11::bigint[], $12::text[])`,
		ids, owners, keys, fingerprints, statuses, requests, timeouts, retentions, createdAts, updatedAts, jobIDs, targets)
	if err != nil {
		return nil, translate(fmt.Errorf("postgres: create: %w", err))
	}
	return stored, nil
}

// Get implements backend.Backend.
func (b *Backend) Get(ctx context.Context, id string) (*backend.Operation, error) {
	op, err := scanOperation(b.pool.QueryRow(ctx, "SELECT "+columns+" FROM "+b.names.operation+" WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, backend.ErrNotFound
	}
	if err != nil {
		return nil, translate(fmt.Errorf("postgres: get: %w", err))
	}
	return op, nil
}

// unfinished is the condition of every transition but Cancel.
const unfinished = `status IN ('NotStarted', 'Running')`

// asyncCommit is a CTE, async_commit, that makes the statement's
// transaction commit without waiting for its WAL to reach disk
// (synchronous_commit = off for this transaction only). For a transition
// whose loss in a database crash is harmless — an operation marked running
// goes back to not started, and its job is rescheduled — it spares a disk
// flush per operation. The statement must read async_commit, or PostgreSQL
// skips the CTE.
const asyncCommit = `async_commit AS (SELECT set_config('synchronous_commit', 'off', true))`

// MarkRunning implements backend.Backend.
func (b *Backend) MarkRunning(ctx context.Context, id string, at time.Time) (*backend.Operation, error) {
	op, err := scanOperation(b.pool.QueryRow(ctx, `WITH `+asyncCommit+`, changed AS (
			UPDATE `+b.names.operation+` SET status = 'Running', attempt = attempt + 1, updated_at = $2
			WHERE id = $1 AND `+unfinished+` RETURNING `+columns+`
		)
		SELECT changed.* FROM async_commit, changed, LATERAL (SELECT pg_notify($3, changed.id)) AS notified`, id, at, b.names.channel))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, b.whyUnchanged(ctx, id)
	}
	if err != nil {
		return nil, translate(fmt.Errorf("postgres: mark running: %w", err))
	}
	return op, nil
}

// SetProgress implements backend.Backend.
func (b *Backend) SetProgress(ctx context.Context, id string, progress backend.Progress, at time.Time) error {
	changed, err := b.update(ctx, `progress_percent = $2, progress_message = $3, updated_at = $4`,
		id, progress.Percent, progress.Message, at)
	if err != nil {
		return fmt.Errorf("postgres: set progress: %w", err)
	}
	if !changed {
		return b.whyUnchanged(ctx, id)
	}
	return nil
}

// Complete implements backend.Backend.
func (b *Backend) Complete(ctx context.Context, id string, outcome backend.Outcome) (bool, error) {
	if outcome.Status != backend.Succeeded && outcome.Status != backend.Failed {
		return false, fmt.Errorf("postgres: cannot complete with status %q", outcome.Status)
	}
	var failureStatus *int
	var failureTitle, failureDetail *string
	if f := outcome.Failure; f != nil {
		failureStatus, failureTitle, failureDetail = &f.Status, &f.Title, &f.Detail
	}
	won, err := b.completeWithDeliveries(ctx, id, outcome, failureStatus, failureTitle, failureDetail)
	if err != nil {
		return false, fmt.Errorf("postgres: complete: %w", err)
	}
	if !won {
		if err := b.whyUnchanged(ctx, id); !errors.Is(err, backend.ErrFinished) {
			return false, err
		}
	}
	return won, nil
}

// completeWithDeliveries stores the outcome, notifies watchers and
// schedules the operation's deliveries, in one transaction: the outbox.
func (b *Backend) completeWithDeliveries(ctx context.Context, id string, outcome backend.Outcome, failureStatus *int, failureTitle, failureDetail *string) (bool, error) {
	const set = `status = $2, response = $3, failure_status = $4, failure_title = $5,
		failure_detail = $6, request = NULL, updated_at = $7::timestamptz,
		expires_at = $7::timestamptz + retention_us * interval '1 microsecond'`
	// Most operations have no targets: one statement, as before there
	// were deliveries, completes them. The others, and those not found
	// unfinished, take the transaction.
	tag, err := b.pool.Exec(ctx, `WITH changed AS (
			UPDATE `+b.names.operation+` SET `+set+` WHERE id = $1 AND `+unfinished+` AND targets IS NULL RETURNING id
		) SELECT pg_notify($8, id) FROM changed`,
		id, outcome.Status, outcome.Response, failureStatus, failureTitle, failureDetail, outcome.At, b.names.channel)
	if err != nil {
		return false, translate(err)
	}
	if tag.RowsAffected() == 1 {
		return true, nil
	}
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return false, translate(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var targets *string
	err = tx.QueryRow(ctx, `WITH changed AS (
			UPDATE `+b.names.operation+` SET `+set+`
			WHERE id = $1 AND `+unfinished+` RETURNING id, targets
		) SELECT targets FROM changed, LATERAL (SELECT pg_notify($8, changed.id)) AS notified`,
		id, outcome.Status, outcome.Response, failureStatus, failureTitle, failureDetail, outcome.At, b.names.channel).Scan(&targets)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, translate(err)
	}
	if err := b.scheduleDeliveries(ctx, tx, id, outcome.Status, targets); err != nil {
		return false, err
	}
	return true, translate(tx.Commit(ctx))
}

// update applies set to an unfinished operation ($1 is its ID, the other
// parameters follow) and notifies watchers, in one statement. It reports
// whether the operation was changed.
func (b *Backend) update(ctx context.Context, set string, id string, args ...any) (bool, error) {
	channel := len(args) + 2
	tag, err := b.pool.Exec(ctx, fmt.Sprintf(`WITH changed AS (
			UPDATE %s SET %s WHERE id = $1 AND %s RETURNING id
		) SELECT pg_notify($%d, id) FROM changed`, b.names.operation, set, unfinished, channel),
		append(append([]any{id}, args...), b.names.channel)...)
	if err != nil {
		return false, translate(err)
	}
	return tag.RowsAffected() == 1, nil
}

// whyUnchanged tells, after a transition changed nothing, whether the
// operation is done or does not exist.
func (b *Backend) whyUnchanged(ctx context.Context, id string) error {
	var exists bool
	err := b.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+b.names.operation+" WHERE id = $1)", id).Scan(&exists)
	switch {
	case err != nil:
		return translate(fmt.Errorf("postgres: %w", err))
	case exists:
		return backend.ErrFinished
	default:
		return backend.ErrNotFound
	}
}

// Cancel implements backend.Backend. Canceling the River job in the same
// transaction makes River cancel the running job's context wherever it runs,
// and never retry it.
func (b *Backend) Cancel(ctx context.Context, id string, at time.Time) error {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return translate(fmt.Errorf("postgres: cancel: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var previous backend.Status
	var jobID int64
	var targets *string
	err = tx.QueryRow(ctx, `WITH previous AS (
			SELECT id, status, job_id FROM `+b.names.operation+` WHERE id = $1 FOR UPDATE
		)
		UPDATE `+b.names.operation+` AS op SET status = 'Canceled', request = NULL, response = NULL,
			failure_status = NULL, failure_title = NULL, failure_detail = NULL, updated_at = $2::timestamptz,
			expires_at = $2::timestamptz + op.retention_us * interval '1 microsecond'
		FROM previous WHERE op.id = previous.id AND previous.status <> 'Canceled'
		RETURNING previous.status, previous.job_id, op.targets`, id, at).Scan(&previous, &jobID, &targets)
	if errors.Is(err, pgx.ErrNoRows) {
		if err := b.whyUnchanged(ctx, id); !errors.Is(err, backend.ErrFinished) {
			return err
		}
		return nil // canceled already
	}
	if err != nil {
		return translate(fmt.Errorf("postgres: cancel: %w", err))
	}
	if !previous.Done() {
		if _, err := b.river.JobCancelTx(ctx, tx, jobID); err != nil && !errors.Is(err, rivertype.ErrNotFound) {
			return translate(fmt.Errorf("postgres: cancel: canceling the job: %w", err))
		}
		if err := b.scheduleDeliveries(ctx, tx, id, backend.Canceled, targets); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", b.names.channel, id); err != nil {
		return translate(fmt.Errorf("postgres: cancel: %w", err))
	}
	return translate(tx.Commit(ctx))
}

// MarkCollected implements backend.Backend. Concurrent updates of the row
// wait for each other, and each re-checks collected_at once the one before
// it commits, so only the first finds it NULL.
func (b *Backend) MarkCollected(ctx context.Context, id string, at time.Time) (bool, error) {
	tag, err := b.pool.Exec(ctx, "UPDATE "+b.names.operation+` SET collected_at = $2
		WHERE id = $1 AND status = 'Succeeded' AND collected_at IS NULL`, id, at)
	if err != nil {
		return false, translate(fmt.Errorf("postgres: mark collected: %w", err))
	}
	if tag.RowsAffected() == 1 {
		return true, nil
	}
	if err := b.whyUnchanged(ctx, id); !errors.Is(err, backend.ErrFinished) {
		return false, err
	}
	return false, nil // collected already, or nothing to collect
}

// Sweep implements backend.Backend. It also repairs what River cannot, or
// only late: operations whose River job was discarded (its attempts used up
// while workers died) are failed, which no worker would otherwise ever
// finish; operations whose job was taken by a process that has died, or
// taken but never started, get a new job.
func (b *Backend) Sweep(ctx context.Context, now time.Time) (int, error) {
	if err := b.reschedule(ctx); err != nil {
		return 0, err
	}
	if err := b.failOrphaned(ctx, now); err != nil {
		return 0, translate(fmt.Errorf("postgres: sweep: %w", err))
	}
	deleted := 0
	for {
		tag, err := b.pool.Exec(ctx, "DELETE FROM "+b.names.operation+` WHERE id IN (
			SELECT id FROM `+b.names.operation+" WHERE expires_at <= $1 LIMIT $2)", now, sweepBatch)
		if err != nil {
			return deleted, translate(fmt.Errorf("postgres: sweep: %w", err))
		}
		deleted += int(tag.RowsAffected())
		if tag.RowsAffected() < sweepBatch {
			return deleted, nil
		}
	}
}

// failOrphaned fails the operations whose River job was discarded, and
// schedules their deliveries, in one transaction.
func (b *Backend) failOrphaned(ctx context.Context, now time.Time) error {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	rows, err := tx.Query(ctx, `WITH orphaned AS (
			UPDATE `+b.names.operation+` AS op SET status = 'Failed', request = NULL, failure_status = $3,
				failure_title = $4, failure_detail = $5,
				updated_at = $1::timestamptz, expires_at = $1::timestamptz + op.retention_us * interval '1 microsecond'
			FROM `+b.names.riverJob+` AS job
			WHERE op.job_id = job.id AND job.state = 'discarded' AND op.`+unfinished+`
			RETURNING op.id, op.targets
		) SELECT id, targets FROM orphaned, LATERAL (SELECT pg_notify($2, orphaned.id)) AS notified`, now, b.names.channel,
		riverjob.Abandoned.Status, riverjob.Abandoned.Title, riverjob.Abandoned.Detail)
	if err != nil {
		return err
	}
	var ids []string
	var targets []*string
	for rows.Next() {
		var id string
		var t *string
		if err := rows.Scan(&id, &t); err != nil {
			rows.Close()
			return err
		}
		ids, targets = append(ids, id), append(targets, t)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, id := range ids {
		if err := b.scheduleDeliveries(ctx, tx, id, backend.Failed, targets[i]); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// listedColumns are columns with NULL for the request and the response,
// which a listing does not load.
const listedColumns = `id, owner, idempotency_key, fingerprint, status, progress_percent, progress_message,
	attempt, NULL::bytea, NULL::bytea, failure_status, failure_title, failure_detail,
	timeout_us, retention_us, created_at, updated_at, expires_at, collected_at, targets`

// List implements backend.Lister, walking the index on (owner, created_at,
// id) (or, for every owner, on (created_at, id)) backwards from the page
// token.
func (b *Backend) List(ctx context.Context, q backend.ListQuery) (backend.ListPage, error) {
	cursor, paging, err := listing.DecodeToken(q)
	if err != nil {
		return backend.ListPage{}, fmt.Errorf("postgres: list: %w", err)
	}
	statement, args := b.listStatement(q, cursor, paging)
	rows, err := b.pool.Query(ctx, statement, args...)
	if err != nil {
		return backend.ListPage{}, translate(fmt.Errorf("postgres: list: %w", err))
	}
	ops, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*backend.Operation, error) { return scanOperation(row) })
	if err != nil {
		return backend.ListPage{}, translate(fmt.Errorf("postgres: list: %w", err))
	}
	return listing.Page(q, ops), nil
}

// listStatement is the query and arguments of List, a page and one more
// operation, after cursor when paging.
func (b *Backend) listStatement(q backend.ListQuery, cursor listing.Cursor, paging bool) (string, []any) {
	where, args := visible(q.Owner, q.AnyOwner, q.Now)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	where += " AND status = ANY(" + arg(listing.Statuses(q)) + "::text[])"
	if !q.CreatedAfter.IsZero() {
		where += " AND created_at > " + arg(q.CreatedAfter)
	}
	if !q.CreatedBefore.IsZero() {
		where += " AND created_at < " + arg(q.CreatedBefore)
	}
	if paging {
		where += ` AND (created_at, id COLLATE "C") < (` + arg(cursor.CreatedAt) + ", " + arg(cursor.ID) + ")"
	}
	return "SELECT " + listedColumns + " FROM " + b.names.operation + " WHERE " + where +
		` ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT ` + arg(listing.PageSize(q)+1), args
}

// Changes implements backend.ChangeLister, walking the index on (owner,
// updated_at, id) (or, for every owner, on (updated_at, id)) forwards from
// the cursor.
func (b *Backend) Changes(ctx context.Context, q backend.ChangeQuery) ([]*backend.Operation, error) {
	after, err := listing.ChangeCursor(q)
	if err != nil {
		return nil, fmt.Errorf("postgres: changes: %w", err)
	}
	statement, args := b.changesStatement(q, after)
	rows, err := b.pool.Query(ctx, statement, args...)
	if err != nil {
		return nil, translate(fmt.Errorf("postgres: changes: %w", err))
	}
	ops, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*backend.Operation, error) { return scanOperation(row) })
	if err != nil {
		return nil, translate(fmt.Errorf("postgres: changes: %w", err))
	}
	return ops, nil
}

// changesStatement is the query and arguments of Changes.
func (b *Backend) changesStatement(q backend.ChangeQuery, after backend.ChangeCursor) (string, []any) {
	where := "(expires_at IS NULL OR expires_at > $1)"
	args := []any{q.Now}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if !q.AnyOwner {
		where += " AND owner = " + arg(q.Owner)
	}
	if after != (backend.ChangeCursor{}) {
		where += ` AND (updated_at, id COLLATE "C") > (` + arg(after.UpdatedAt) + ", " + arg(after.ID) + ")"
	}
	// The limit's placeholder first: args must be read after its append.
	limit := arg(listing.ChangeLimit(q))
	return "SELECT " + listedColumns + " FROM " + b.names.operation + " WHERE " + where +
		` ORDER BY updated_at, id COLLATE "C" LIMIT ` + limit, args
}

// CountByStatus implements backend.Lister.
func (b *Backend) CountByStatus(ctx context.Context, q backend.CountQuery) (map[backend.Status]int, error) {
	where, args := visible(q.Owner, q.AnyOwner, q.Now)
	rows, err := b.pool.Query(ctx, "SELECT status, count(*) FROM "+b.names.operation+" WHERE "+where+" GROUP BY status", args...)
	if err != nil {
		return nil, translate(fmt.Errorf("postgres: count by status: %w", err))
	}
	counts := listing.Counts()
	var status backend.Status
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&status, &n}, func() error {
		counts[status] = n
		return nil
	}); err != nil {
		return nil, translate(fmt.Errorf("postgres: count by status: %w", err))
	}
	return counts, nil
}

// visible is the condition, and its arguments ($1 on), of the operations a
// listing or a count of owner's (or anyOwner's) shows at now: neither
// canceled nor expired.
func visible(owner string, anyOwner bool, now time.Time) (where string, args []any) {
	where = "status <> 'Canceled' AND (expires_at IS NULL OR expires_at > $1)"
	args = []any{now}
	if !anyOwner {
		where += " AND owner = $2"
		args = append(args, owner)
	}
	return where, args
}

// sweepBatch bounds the expired operations one statement deletes, so that
// each ends well within the statement timeout however many expired at
// once: a single statement over a backlog would be canceled at every sweep,
// and the backlog never go.
const sweepBatch = 1000

// reschedule gives a new job to every unfinished operation whose job River
// has marked running, but which no live process is executing: the process
// that took it has been silent for deadAfter (killed, its machine gone), or
// the operation is still NotStarted RescueAfter after the job was taken — a
// worker starts an operation within milliseconds of taking its job, so the
// job was lost on the way, River's fetch committed but its answer never
// reaching the worker. River would rescue either only after the
// operation's whole timeout, ten minutes by default. The old job is
// canceled, so that River's rescuer, when it comes to it, does not run it
// again; a process that was only slow and still executes it finds its
// context canceled.
func (b *Backend) reschedule(ctx context.Context) error {
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return translate(fmt.Errorf("postgres: sweep: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	rows, err := tx.Query(ctx, `SELECT op.id, op.timeout_us, job.id FROM `+b.names.operation+` AS op
		JOIN `+b.names.riverJob+` AS job ON job.id = op.job_id
		WHERE op.`+unfinished+` AND job.state = 'running' AND (
			(op.status = 'NotStarted' AND job.attempted_at < now() - $1 * interval '1 microsecond')
			OR NOT EXISTS (SELECT 1 FROM `+b.names.process+` AS p
				WHERE p.id = job.attempted_by[cardinality(job.attempted_by)]
					AND p.seen_at > now() - $2 * interval '1 microsecond'))
		FOR UPDATE OF op SKIP LOCKED`, b.rescueAfter.Microseconds(), b.deadAfter.Microseconds())
	if err != nil {
		return translate(fmt.Errorf("postgres: sweep: %w", err))
	}
	var ids []string
	var lost []int64
	var params []river.InsertManyParams
	for rows.Next() {
		var id string
		var timeoutUS, jobID int64
		if err := rows.Scan(&id, &timeoutUS, &jobID); err != nil {
			rows.Close()
			return translate(fmt.Errorf("postgres: sweep: %w", err))
		}
		ids, lost = append(ids, id), append(lost, jobID)
		params = append(params, river.InsertManyParams{
			Args:       riverjob.Args{OperationID: id, Timeout: time.Duration(timeoutUS) * time.Microsecond},
			InsertOpts: riverjob.ResumeOpts(),
		})
	}
	if err := rows.Err(); err != nil {
		return translate(fmt.Errorf("postgres: sweep: %w", err))
	}
	// The records of dead processes go too; a live process whose record
	// went for its silence writes it again at its next beat.
	if _, err := tx.Exec(ctx, "DELETE FROM "+b.names.process+" WHERE seen_at < now() - $1 * interval '1 microsecond'",
		b.deadAfter.Microseconds()); err != nil {
		return translate(fmt.Errorf("postgres: sweep: %w", err))
	}
	deliveries, err := b.rescheduleDeliveries(ctx, tx)
	if err != nil {
		return err
	}
	if deliveries > 0 {
		b.logger.Warn("asyncreply: postgres: deliveries whose process died were given a new job", "deliveries", deliveries)
	}
	if len(ids) == 0 {
		return translate(tx.Commit(ctx))
	}
	jobs, err := b.river.InsertManyTx(ctx, tx, params)
	if err != nil {
		return translate(fmt.Errorf("postgres: sweep: rescheduling: %w", err))
	}
	jobIDs := make([]int64, len(jobs))
	for i, job := range jobs {
		jobIDs[i] = job.Job.ID
	}
	if _, err := tx.Exec(ctx, `UPDATE `+b.names.operation+` AS op SET job_id = new.job_id
		FROM unnest($1::text[], $2::bigint[]) AS new(id, job_id) WHERE op.id = new.id`, ids, jobIDs); err != nil {
		return translate(fmt.Errorf("postgres: sweep: rescheduling: %w", err))
	}
	for _, jobID := range lost {
		if _, err := b.river.JobCancelTx(ctx, tx, jobID); err != nil && !errors.Is(err, rivertype.ErrNotFound) {
			return translate(fmt.Errorf("postgres: sweep: canceling a lost job: %w", err))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return translate(fmt.Errorf("postgres: sweep: %w", err))
	}
	b.logger.Warn("asyncreply: postgres: operations whose process died, or whose job was lost, were given a new job", "operations", len(ids))
	return nil
}

// Watch implements backend.Backend.
func (b *Backend) Watch(ctx context.Context, id string) (<-chan struct{}, func(), error) {
	changes, stop := b.watchers.Watch(id)
	return changes, stop, nil
}

// Start implements backend.Backend.
func (b *Backend) Start(ctx context.Context, execute backend.ExecuteFunc) error {
	if err := b.worker.Start(ctx, b.river, execute); err != nil {
		return translate(fmt.Errorf("postgres: %w", err))
	}
	return nil
}

// Stop implements backend.Backend. Operations canceled by Stop go back to
// River's queue without losing an attempt, for another process or the next
// start to run.
func (b *Backend) Stop(ctx context.Context) error {
	var err error
	b.stopOnce.Do(func() {
		err = b.worker.Stop(ctx, b.river)
		b.createMu.Lock() // waits for Creates in flight
		b.creates.Stop()
		b.createsEnded = true
		b.createMu.Unlock()
		b.stopListener()
		b.listening.Wait()
	})
	return err
}

// Timings of the listening connection. A server that stops answering does
// not break the connection: only a ping can tell, so one is sent whenever
// nothing was heard for listenCheckInterval. Reconnecting retries at most
// listenRetryDelay apart, so that watchers follow changes again within
// seconds of the database's return, however long it was away.
const (
	listenCheckInterval = 2 * time.Second
	listenCheckTimeout  = 3 * time.Second
	listenRetryDelay    = time.Second
)

// listen holds a connection that LISTENs for changes and wakes this
// process's watchers, reconnecting after failures until ctx ends.
func (b *Backend) listen(ctx context.Context) {
	defer b.listening.Done()
	delay := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := b.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		b.logger.Warn("asyncreply: postgres: listening for changes failed; reconnecting", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, listenRetryDelay)
	}
}

func (b *Backend) listenOnce(ctx context.Context) error {
	pooled, err := b.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pooled.Hijack() // held for as long as it listens: not the pool's any more
	defer conn.Close(context.WithoutCancel(ctx))
	listenCtx, cancel := context.WithTimeout(ctx, listenCheckTimeout)
	_, err = conn.Exec(listenCtx, "LISTEN "+pgx.Identifier{b.names.channel}.Sanitize())
	cancel()
	if err != nil {
		return err
	}
	// Changes made while not listening were missed: every watcher re-reads.
	b.watchers.NotifyAll()
	for {
		waitCtx, cancel := context.WithTimeout(ctx, listenCheckInterval)
		notification, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			b.watchers.Notify(notification.Payload)
		case ctx.Err() != nil:
			return ctx.Err()
		case waitCtx.Err() != nil: // quiet: is the server still there?
			pingCtx, cancel := context.WithTimeout(ctx, listenCheckTimeout)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return fmt.Errorf("the listening connection does not answer: %w", err)
			}
		default:
			return err
		}
	}
}

// translate marks errors that mean the database could not be reached as
// backend.ErrUnavailable, so that callers answer 503.
func translate(err error) error {
	if err == nil || errors.Is(err, backend.ErrUnavailable) || admission.Refused(err) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch class := pgErr.Code[:2]; {
		case class == "08", class == "53", class == "57", // connection exception, insufficient resources, operator intervention (statement_timeout among them)
			pgErr.Code == "55P03": // lock_not_available: lock_timeout passed, the lock held by another session
			return fmt.Errorf("%w: %w", backend.ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	// Not an answer from the server: the connection or the network failed.
	return fmt.Errorf("%w: %w", backend.ErrUnavailable, err)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func schemaOrDefault(schema string) string { return cmp.Or(schema, DefaultSchema) }

// tableNames are the quoted names the backend's statements use.
type tableNames struct {
	operation, version, riverJob, process, delivery string
	channel                                         string // NOTIFY channel, unquoted
}

func newTableNames(schema string) tableNames {
	return tableNames{
		operation: pgx.Identifier{schema, "asyncreply_operation"}.Sanitize(),
		version:   pgx.Identifier{schema, "asyncreply_schema_version"}.Sanitize(),
		riverJob:  pgx.Identifier{schema, "river_job"}.Sanitize(),
		process:   pgx.Identifier{schema, "asyncreply_process"}.Sanitize(),
		delivery:  pgx.Identifier{schema, "asyncreply_delivery"}.Sanitize(),
		channel:   schema + ".asyncreply_operation",
	}
}

func (n tableNames) expand(statement string) string {
	return strings.NewReplacer("{{.operation}}", n.operation, "{{.process}}", n.process, "{{.delivery}}", n.delivery).Replace(statement)
}
