// Package sqlite is the SQLite backend, the embedded default: operations live
// in one database file, run as River jobs, and survive restarts. Several
// processes on one machine may share the file, a gateway that accepts
// operations and a worker process that executes them, say.
//
// It is pure Go (modernc.org/sqlite): no cgo. Accepting an operation is one
// transaction that inserts its row and its River job, so a 202 is never sent
// for an operation that is not both stored and scheduled. Operations run at
// least once; the first completed attempt's outcome is the one stored.
//
// A process executing operations holds an OS lock (flock) on a file of its
// own in the directory PATH-processes beside the database, for as long as
// it executes. When it dies, killed or crashed, the kernel releases the
// lock, so the operations it was running are given new jobs — run before
// those still waiting — as soon as another process looks: the process
// restarted in its place as it starts, within a second, or one running
// beside it at its next sweep. A process silent for six heartbeats
// (Config.HeartbeatInterval) is taken for dead too: the only sign for one
// whose lock cannot be tested.
//
// SQLite has no LISTEN/NOTIFY. A change wakes the watchers of the process
// that made it at once; the other processes on the file find it when they
// next poll, every Config.PollInterval while they have watchers and not at
// all while they have none.
//
// The file must be on a local file system, and its processes on one
// machine: SQLite's locking, which lets the processes take turns writing,
// is unreliable over network file systems, and a process on another
// machine may hold its lock where the others cannot see it, so that they
// take it for dead and run its operations again.
package sqlite

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivertype"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/internal/admission"
	"github.com/asyncreply/asyncreply/backend/internal/groupcommit"
	"github.com/asyncreply/asyncreply/backend/internal/listing"
	"github.com/asyncreply/asyncreply/backend/internal/riverjob"
	"github.com/asyncreply/asyncreply/backend/internal/watch"
)

// Defaults of Config's fields.
const (
	DefaultConcurrency  = 100
	DefaultRescueAfter  = time.Minute
	DefaultPollInterval = 25 * time.Millisecond

	DefaultHeartbeatInterval = riverjob.DefaultHeartbeatInterval
)

// River fetches new jobs from the file at most every riverFetchCooldown,
// when told of new ones (its SQLite driver polls its notifications every
// 50 ms), and at least every riverFetchPollInterval. At River's defaults,
// 100 ms and 1 s, execution fell behind accepting under load: up to
// Concurrency jobs a fetch, fetches spaced by the cooldown. An idle
// process's fetch is an UPDATE that changes nothing, five a second.
const (
	riverFetchCooldown     = 20 * time.Millisecond
	riverFetchPollInterval = 200 * time.Millisecond
)

// busyTimeout is how long a write waits for another connection's write
// transaction on the same file to end before it fails with ErrUnavailable.
const busyTimeout = 5 * time.Second

// Config configures a SQLite backend.
type Config struct {
	// Path is the database file, created if it does not exist. Required.
	// Processes that share operations open the same file.
	Path string

	// Concurrency is how many operations this process executes at once.
	// Defaults to DefaultConcurrency.
	Concurrency int

	// RescueAfter is how long a running job must have run before River may
	// consider its worker dead and run it again; it is also never before the
	// operation's own timeout has passed. Defaults to DefaultRescueAfter.
	RescueAfter time.Duration

	// HeartbeatInterval is how often a process executing operations records
	// that it is alive. A process that dies on this machine is known dead
	// at once by its lock (see the package documentation); one silent for
	// six intervals is taken for dead too — the only sign for a process
	// whose lock cannot be tested — and its operations are run again by
	// the others at their next Sweep, rather than once River's rescue delay
	// and their timeout have passed. Each process writes its record once
	// per interval. Every process sharing the file should use the same
	// value. Defaults to DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration

	// SkipMigrations leaves the schema as it is; use it when migrations are
	// applied by an explicit Migrate step. Defaults to false: New migrates.
	SkipMigrations bool

	// Logger receives River's logs and the backend's. Defaults to
	// slog.Default().
	Logger *slog.Logger

	// PollInterval is how often the backend looks for changes made by other
	// processes on the file, while this process has watchers: it bounds how
	// late a watcher learns of them. Defaults to DefaultPollInterval.
	PollInterval time.Duration

	// MaxQueued bounds the operations waiting to run, those of every
	// process on the file: past it, Create stores nothing and returns
	// backend.ErrQueueFull. Every process that accepts should use the same
	// value. Defaults to 0: no bound, the queue being on disk.
	MaxQueued int

	// MaxQueuedPerOwner bounds the operations of one owner waiting to run:
	// past it, Create stores nothing and returns backend.ErrOwnerQueueFull,
	// while other owners are still accepted. Operations without an owner
	// count only towards MaxQueued. Defaults to 0: no bound per owner.
	MaxQueuedPerOwner int
}

// Backend is a SQLite backend.Backend. Create it with New.
type Backend struct {
	path         string
	dbMu         sync.RWMutex // held for reading by every call that uses db
	db           *sql.DB      // nil once Stop has closed it
	river        *river.Client[*sql.Tx]
	worker       *riverjob.Worker
	deliveries   *riverjob.DeliveryWorker
	logger       *slog.Logger
	pollInterval time.Duration
	deadAfter    time.Duration // a process silent this long is dead
	limits       admission.Limits

	processID   string
	processMu   sync.Mutex   // guards processLock
	processLock *processLock // held from Start to Stop

	watchers   watch.Hub
	watchBegun chan struct{} // wakes the idle poller

	creates    *groupcommit.Committer
	changes    *transitions
	stopPoller context.CancelFunc
	polling    sync.WaitGroup
	stopOnce   sync.Once
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Lister  = (*Backend)(nil)

	_ backend.ChangeLister = (*Backend)(nil)
)

// Open opens the database file at path as the backend uses it: a WAL
// journal, so that reading never waits for writing; transactions that take
// the write lock as they begin, so that one waits for another at its start
// instead of failing at its first write; a busy timeout, so that connections
// to the file, in this process or another, wait for each other's writes
// instead of failing at once; and one
// connection, as River's SQLite driver recommends, so that this process's
// queries queue in database/sql rather than contend for SQLite's lock. The
// connection keeps the statements it has run prepared (see stmtcache.go).
//
// With one connection, a transaction holds the whole *sql.DB: while one is
// open, every query must go through it.
//
// Commits are synchronous=NORMAL: in WAL mode they survive the process's
// crash, but not the machine's until the next disk flush. The backend makes
// the commits that must survive both — accepting an operation, canceling
// one — flush at once (durably), which also flushes every commit before
// them; losing a later transition to a power cut only runs the operation
// again.
func Open(path string) (*sql.DB, error) {
	if path == "" {
		return nil, errors.New("sqlite: the database path is empty")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	// A URI filename: '?' and '#' would end the path, and '%' starts an escape.
	escaped := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(abs))
	connector, err := sqlite.NewConnector(dsn(escaped))
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	db := sql.OpenDB(stmtCacheConnector{connector})
	db.SetMaxOpenConns(1)
	return db, nil
}

// dsn is the data source name of the file at path, a URI path escaped.
func dsn(path string) string {
	return fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate",
		path, busyTimeout.Milliseconds())
}

// New opens the file at cfg.Path and returns a backend on it, migrating its
// schema first unless cfg.SkipMigrations is set. The backend owns the
// database and closes it in Stop. It starts its poller at once, so that
// watchers in a process that only accepts are woken too; Stop ends it.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Path == "" {
		return nil, errors.New("sqlite: Config.Path is required")
	}
	path, err := filepath.Abs(cfg.Path) // as it is now, should the working directory change
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	cfg.Path = path
	cfg.Concurrency = cmp.Or(max(cfg.Concurrency, 0), DefaultConcurrency)
	cfg.RescueAfter = cmp.Or(max(cfg.RescueAfter, 0), DefaultRescueAfter)
	cfg.PollInterval = cmp.Or(max(cfg.PollInterval, 0), DefaultPollInterval)
	cfg.HeartbeatInterval = cmp.Or(max(cfg.HeartbeatInterval, 0), DefaultHeartbeatInterval)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	db, err := Open(cfg.Path)
	if err != nil {
		return nil, err
	}
	b, err := newBackend(ctx, db, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	return b, nil
}

func newBackend(ctx context.Context, db *sql.DB, cfg Config) (*Backend, error) {
	if err := connect(ctx, db); err != nil {
		return nil, translate(fmt.Errorf("sqlite: opening %s: %w", cfg.Path, err))
	}
	if !cfg.SkipMigrations {
		if err := migrate(ctx, db, cfg.Logger); err != nil {
			return nil, err
		}
	}
	b := &Backend{
		path:         cfg.Path,
		db:           db,
		logger:       cfg.Logger,
		pollInterval: cfg.PollInterval,
		deadAfter:    riverjob.DeadAfter(cfg.HeartbeatInterval),
		limits:       admission.Limits{Queued: cfg.MaxQueued, QueuedPerOwner: cfg.MaxQueuedPerOwner},
		watchBegun:   make(chan struct{}, 1),
	}
	id := riverjob.NewID()
	b.processID = id
	b.worker = riverjob.NewWorker(b.Complete, riverjob.Liveness{
		ID:       id,
		Interval: cfg.HeartbeatInterval,
		Beat: func(ctx context.Context) error {
			return b.exec(ctx, `INSERT INTO asyncreply_process (id, seen_at) VALUES (?, ?)
				ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`, id, micros(time.Now()))
		},
		Forget: func(ctx context.Context) error {
			return b.exec(ctx, "DELETE FROM asyncreply_process WHERE id = ?", id)
		},
	})
	b.deliveries = riverjob.NewDeliveryWorker(riverjob.DeliveryStore{Load: b.loadDelivery, Record: b.recordDelivery})
	client, err := riverjob.NewClient(riversqlite.New(db), b.worker, riverjob.ClientConfig{
		Concurrency: cfg.Concurrency, RescueAfter: cfg.RescueAfter, Logger: cfg.Logger, Deliveries: b.deliveries,
		FetchCooldown: riverFetchCooldown, FetchPollInterval: riverFetchPollInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	b.river = client

	pollCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.stopPoller = cancel
	b.polling.Add(1)
	go b.poll(pollCtx)
	b.creates = groupcommit.Start(groupcommit.Funcs{Together: b.createTogether, Alone: b.createOne})
	b.changes = startTransitions(db)
	return b, nil
}

// connect opens db's connection. A new file's switch to WAL, which the first
// connection of every process asks for, takes a lock that SQLite does not
// wait for, so processes starting together on a new file retry, until the
// busy timeout as for any other lock.
func connect(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(busyTimeout)
	delay := time.Millisecond
	for {
		err := db.PingContext(ctx)
		var sqliteErr *sqlite.Error
		if err == nil || !errors.As(err, &sqliteErr) || sqliteErr.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// columns are read in this order by scanOperation.
const columns = `id, owner, idempotency_key, fingerprint, status, progress_percent, progress_message,
	attempt, request, response, failure_status, failure_title, failure_detail,
	timeout_us, retention_us, created_at, updated_at, expires_at, collected_at, targets`

func scanOperation(row interface{ Scan(...any) error }) (*backend.Operation, error) {
	var (
		op                          backend.Operation
		failureStatus               sql.NullInt64
		failureTitle, failureDetail sql.NullString
		timeoutUS, retentionUS      int64
		createdAt, updatedAt        int64
		expiresAt, collectedAt      sql.NullInt64
		targets                     sql.NullString
	)
	err := row.Scan(&op.ID, &op.Owner, &op.IdempotencyKey, &op.Fingerprint, &op.Status,
		&op.Progress.Percent, &op.Progress.Message, &op.Attempt, &op.Request, &op.Response,
		&failureStatus, &failureTitle, &failureDetail, &timeoutUS, &retentionUS,
		&createdAt, &updatedAt, &expiresAt, &collectedAt, &targets)
	if err != nil {
		return nil, err
	}
	if op.Targets, err = decodeTargets(targets); err != nil {
		return nil, err
	}
	if failureStatus.Valid {
		op.Failure = &backend.Failure{Status: int(failureStatus.Int64), Title: failureTitle.String, Detail: failureDetail.String}
	}
	op.Timeout = time.Duration(timeoutUS) * time.Microsecond
	op.Retention = time.Duration(retentionUS) * time.Microsecond
	op.CreatedAt, op.UpdatedAt = fromMicros(createdAt), fromMicros(updatedAt)
	if expiresAt.Valid {
		op.ExpiresAt = fromMicros(expiresAt.Int64)
	}
	if collectedAt.Valid {
		op.CollectedAt = fromMicros(collectedAt.Int64)
	}
	return &op, nil
}

// Create implements backend.Backend: the operation's row and its River job
// are inserted in one transaction.
func (b *Backend) Create(ctx context.Context, op *backend.Operation) (*backend.Operation, bool, error) {
	db, release, err := b.database()
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: create: %w", err)
	}
	defer release()
	if db != b.db { // stopped: no group committer any more
		return b.createAlone(ctx, db, op)
	}
	r := b.creates.Create(ctx, op)
	if r.Err != nil {
		return nil, false, translate(r.Err)
	}
	return r.Stored, r.Created, nil
}

// createTogether implements groupcommit.Funcs.Together. An operation
// refused admission gets its refusal as its result; its batch-mates are
// created.
func (b *Backend) createTogether(ctx context.Context, batch []groupcommit.Request) ([]groupcommit.Result, error) {
	results := make([]groupcommit.Result, len(batch))
	err := durably(ctx, b.db, func(tx *sql.Tx) error {
		var ops []*backend.Operation // counted only when a bound is set
		if b.limits.Bounded() {
			for _, req := range batch {
				if req.Ctx.Err() == nil { // one given up is not inserted
					ops = append(ops, req.Op)
				}
			}
		}
		tally, err := b.tally(ctx, tx, ops)
		if err != nil {
			return err
		}
		var together []int // positions of the operations inserted together
		for i, req := range batch {
			if err := req.Ctx.Err(); err != nil {
				results[i].Err = err // given up: not inserted
				continue
			}
			if req.Op.IdempotencyKey == "" {
				if err := tally.Admit(req.Op.Owner); err != nil {
					results[i].Err = fmt.Errorf("sqlite: create: %w", err)
					continue
				}
				together = append(together, i)
				continue
			}
			// One with a key may find an operation with the same, perhaps
			// inserted by an earlier one of the batch: one at a time.
			var err error
			results[i].Stored, results[i].Created, err = b.createInTx(ctx, tx, req.Op, tally)
			if admission.Refused(err) {
				results[i].Err = err
				continue
			}
			if err != nil {
				return err
			}
		}
		if len(together) == 0 {
			return nil
		}
		inserted := make([]*backend.Operation, len(together))
		for j, i := range together {
			inserted[j] = batch[i].Op
		}
		stored, err := b.insert(ctx, tx, inserted)
		if err != nil {
			return err
		}
		for j, i := range together {
			results[i].Stored, results[i].Created = stored[j], true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// createOne implements groupcommit.Funcs.Alone.
func (b *Backend) createOne(req groupcommit.Request) groupcommit.Result {
	stored, created, err := b.createAlone(req.Ctx, b.db, req.Op)
	return groupcommit.Result{Stored: stored, Created: created, Err: err}
}

// createAlone creates one operation in a transaction of its own.
func (b *Backend) createAlone(ctx context.Context, db *sql.DB, op *backend.Operation) (*backend.Operation, bool, error) {
	// The transaction holds the file's write lock from its start, so Creates
	// with the same key, in this process or another, run one after the other
	// and exactly one inserts.
	var stored *backend.Operation
	var created bool
	err := durably(ctx, db, func(tx *sql.Tx) error {
		tally, err := b.tally(ctx, tx, []*backend.Operation{op})
		if err != nil {
			return err
		}
		stored, created, err = b.createInTx(ctx, tx, op, tally)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return stored, created, nil
}

// durably runs fn in a transaction whose commit reaches the disk before
// durably returns (synchronous=FULL), and with it every commit before it:
// for what a client is told has happened, a 202 or a 204. Errors of fn are
// returned as they are.
func durably(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	conn, err := db.Conn(ctx) // the connection's setting, for this transaction only
	if err != nil {
		return translate(fmt.Errorf("sqlite: %w", err))
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
		return translate(fmt.Errorf("sqlite: %w", err))
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous = NORMAL")
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return translate(fmt.Errorf("sqlite: %w", err))
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return translate(tx.Commit())
}

// createInTx inserts op and its job in tx, unless an operation with its
// idempotency key exists, which it returns instead, or tally refuses it
// admission. The transaction holds the
// file's write lock, so no other Create runs meanwhile.
func (b *Backend) createInTx(ctx context.Context, tx *sql.Tx, op *backend.Operation, tally *admission.Tally) (*backend.Operation, bool, error) {
	if op.IdempotencyKey != "" {
		existing, err := scanOperation(tx.QueryRowContext(ctx, "SELECT "+columns+` FROM asyncreply_operation
			WHERE owner = ? AND idempotency_key = ? AND idempotency_key <> '' AND status <> 'Canceled'
				AND (expires_at IS NULL OR expires_at > ?)
			ORDER BY created_at DESC LIMIT 1`, op.Owner, op.IdempotencyKey, micros(op.CreatedAt)))
		switch {
		case err == nil:
			return existing, false, nil
		case !errors.Is(err, sql.ErrNoRows):
			return nil, false, translate(fmt.Errorf("sqlite: create: %w", err))
		}
	}
	if err := tally.Admit(op.Owner); err != nil {
		return nil, false, fmt.Errorf("sqlite: create: %w", err)
	}

	stored, err := b.insert(ctx, tx, []*backend.Operation{op})
	if err != nil {
		return nil, false, err
	}
	return stored[0], true, nil
}

// insert inserts ops and their River jobs in tx, the jobs in one
// statement, and returns the operations as stored.
func (b *Backend) insert(ctx context.Context, tx *sql.Tx, ops []*backend.Operation) ([]*backend.Operation, error) {
	params := make([]river.InsertManyParams, len(ops))
	for i, op := range ops {
		params[i] = river.InsertManyParams{Args: riverjob.Args{OperationID: op.ID, Timeout: op.Timeout}}
	}
	jobs, err := b.river.InsertManyTx(ctx, tx, params)
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: create: inserting the jobs: %w", err))
	}
	if len(jobs) != len(ops) {
		return nil, fmt.Errorf("sqlite: create: %d jobs inserted for %d operations", len(jobs), len(ops))
	}
	// SQLite does not promise RETURNING's order: each job is found by its
	// operation, in its arguments.
	jobIDs := make(map[string]int64, len(jobs))
	for _, job := range jobs {
		var args riverjob.Args
		if err := json.Unmarshal(job.Job.EncodedArgs, &args); err != nil {
			return nil, fmt.Errorf("sqlite: create: reading an inserted job: %w", err)
		}
		jobIDs[args.OperationID] = job.Job.ID
	}
	stored := make([]*backend.Operation, len(ops))
	for i, op := range ops {
		jobID, ok := jobIDs[op.ID]
		if !ok {
			return nil, fmt.Errorf("sqlite: create: no job inserted for operation %s", op.ID)
		}
		s := *op
		s.Fingerprint, s.Request = bytes.Clone(op.Fingerprint), bytes.Clone(op.Request)
		s.Status, s.Attempt, s.Progress = backend.NotStarted, 0, backend.Progress{}
		s.Response, s.Failure, s.ExpiresAt, s.CollectedAt = nil, nil, time.Time{}, time.Time{}
		s.CreatedAt = fromMicros(micros(s.CreatedAt))
		s.UpdatedAt = fromMicros(micros(cmp.Or(s.UpdatedAt, s.CreatedAt)))
		s.Targets = slices.Clone(op.Targets)
		targets, err := encodeTargets(s.Targets)
		if err != nil {
			return nil, fmt.Errorf("sqlite: create: %w", err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO asyncreply_operation (id, owner, idempotency_key, fingerprint, status,
			request, timeout_us, retention_us, created_at, updated_at, job_id, targets)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			s.ID, s.Owner, s.IdempotencyKey, s.Fingerprint, string(s.Status), s.Request,
			s.Timeout.Microseconds(), s.Retention.Microseconds(), micros(s.CreatedAt), micros(s.UpdatedAt), jobID, targets)
		if err != nil {
			return nil, translate(fmt.Errorf("sqlite: create: %w", err))
		}
		stored[i] = &s
	}
	return stored, nil
}

// tally counts, for a transaction that creates ops, the operations waiting
// to run in the whole file and of the owners of ops, or returns nil when no
// bound is set, at no cost. The transaction holds the file's write lock, so
// the counts stay true until it commits. Each count stops at its bound and
// reads only the partial index of waiting operations.
func (b *Backend) tally(ctx context.Context, tx *sql.Tx, ops []*backend.Operation) (*admission.Tally, error) {
	if !b.limits.Bounded() {
		return nil, nil
	}
	var total int
	if b.limits.Queued > 0 {
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM asyncreply_operation
			WHERE status = 'NotStarted' LIMIT ?)`, b.limits.Queued).Scan(&total)
		if err != nil {
			return nil, translate(fmt.Errorf("sqlite: create: counting the operations waiting to run: %w", err))
		}
	}
	owners := make(map[string]int)
	for _, owner := range b.limits.Owners(ops) {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM asyncreply_operation
			WHERE status = 'NotStarted' AND owner = ? LIMIT ?)`, owner, b.limits.QueuedPerOwner).Scan(&n)
		if err != nil {
			return nil, translate(fmt.Errorf("sqlite: create: counting an owner's operations waiting to run: %w", err))
		}
		owners[owner] = n
	}
	return admission.NewTally(b.limits, total, owners), nil
}

// Get implements backend.Backend.
func (b *Backend) Get(ctx context.Context, id string) (*backend.Operation, error) {
	db, release, err := b.database()
	if err != nil {
		return nil, fmt.Errorf("sqlite: get: %w", err)
	}
	defer release()
	op, err := scanOperation(db.QueryRowContext(ctx, "SELECT "+columns+" FROM asyncreply_operation WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, backend.ErrNotFound
	}
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: get: %w", err))
	}
	return op, nil
}

// unfinished is the condition of every transition but Cancel.
const unfinished = `status IN ('NotStarted', 'Running')`

// MarkRunning implements backend.Backend.
func (b *Backend) MarkRunning(ctx context.Context, id string, at time.Time) (*backend.Operation, error) {
	db, release, err := b.database()
	if err != nil {
		return nil, fmt.Errorf("sqlite: mark running: %w", err)
	}
	defer release()
	var op *backend.Operation
	err = b.transition(ctx, db, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		op, err = scanOperation(tx.QueryRowContext(ctx, `UPDATE asyncreply_operation
			SET status = 'Running', attempt = attempt + 1, updated_at = ?
			WHERE id = ? AND `+unfinished+` RETURNING `+columns, micros(at), id))
		if errors.Is(err, sql.ErrNoRows) {
			return nil // op stays nil: done, or not found
		}
		return translate(err)
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: mark running: %w", err)
	}
	if op == nil {
		return nil, whyUnchanged(ctx, db, id)
	}
	b.watchers.Notify(id)
	return op, nil
}

// SetProgress implements backend.Backend.
func (b *Backend) SetProgress(ctx context.Context, id string, progress backend.Progress, at time.Time) error {
	changed, err := b.update(ctx, id, `progress_percent = ?, progress_message = ?, updated_at = ?`,
		progress.Percent, progress.Message, micros(at))
	if err != nil {
		return fmt.Errorf("sqlite: set progress: %w", err)
	}
	if !changed {
		return b.whyUnchanged(ctx, id)
	}
	return nil
}

// Complete implements backend.Backend.
func (b *Backend) Complete(ctx context.Context, id string, outcome backend.Outcome) (bool, error) {
	if outcome.Status != backend.Succeeded && outcome.Status != backend.Failed {
		return false, fmt.Errorf("sqlite: cannot complete with status %q", outcome.Status)
	}
	var failureStatus sql.NullInt64
	var failureTitle, failureDetail sql.NullString
	if f := outcome.Failure; f != nil {
		failureStatus = sql.NullInt64{Int64: int64(f.Status), Valid: true}
		failureTitle = sql.NullString{String: f.Title, Valid: true}
		failureDetail = sql.NullString{String: f.Detail, Valid: true}
	}
	at := micros(outcome.At)
	db, release, err := b.database()
	if err != nil {
		return false, fmt.Errorf("sqlite: complete: %w", err)
	}
	defer release()
	// One transaction with the deliveries it schedules: the outbox. It may
	// share it with other transitions, and run again alone if that fails.
	won := false
	err = b.transition(ctx, db, func(ctx context.Context, tx *sql.Tx) error {
		won = false
		var targets sql.NullString
		err := tx.QueryRowContext(ctx, `UPDATE asyncreply_operation SET status = ?, response = ?, failure_status = ?,
			failure_title = ?, failure_detail = ?, request = NULL, updated_at = ?, expires_at = ? + retention_us
			WHERE id = ? AND `+unfinished+` RETURNING targets`,
			string(outcome.Status), outcome.Response, failureStatus, failureTitle, failureDetail, at, at, id).Scan(&targets)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return translate(err)
		}
		won = true
		return b.scheduleDeliveries(ctx, tx, id, outcome.Status, targets)
	})
	if err != nil {
		return false, fmt.Errorf("sqlite: complete: %w", err)
	}
	if won {
		b.watchers.Notify(id)
	} else if err := whyUnchanged(ctx, db, id); !errors.Is(err, backend.ErrFinished) {
		return false, err
	}
	return won, nil
}

// update applies set, whose parameters are args, to the operation id if it
// is unfinished, and wakes its watchers if it did. It reports whether the
// operation was changed.
func (b *Backend) update(ctx context.Context, id, set string, args ...any) (bool, error) {
	db, release, err := b.database()
	if err != nil {
		return false, err
	}
	defer release()
	var changed bool
	err = b.transition(ctx, db, func(ctx context.Context, tx *sql.Tx) error {
		result, err := tx.ExecContext(ctx, "UPDATE asyncreply_operation SET "+set+" WHERE id = ? AND "+unfinished,
			append(args, id)...)
		if err != nil {
			return translate(err)
		}
		n, err := result.RowsAffected()
		changed = n > 0
		return translate(err)
	})
	if err != nil || !changed {
		return false, err
	}
	b.watchers.Notify(id)
	return true, nil
}

// transition runs fn on db (see transition): with the transitions handed
// over meanwhile on the backend's own database, alone on one opened after
// Stop.
func (b *Backend) transition(ctx context.Context, db *sql.DB, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if db != b.db {
		return runAlone(ctx, db, fn)
	}
	return b.changes.apply(ctx, fn)
}

// queryer is a *sql.DB or a *sql.Tx: while a transaction is open, its
// queries must go through it, the database's one connection being its.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// whyUnchanged tells, after a transition changed nothing, whether the
// operation is done or does not exist.
func (b *Backend) whyUnchanged(ctx context.Context, id string) error {
	db, release, err := b.database()
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	defer release()
	return whyUnchanged(ctx, db, id)
}

func whyUnchanged(ctx context.Context, q queryer, id string) error {
	var exists bool
	err := q.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM asyncreply_operation WHERE id = ?)", id).Scan(&exists)
	switch {
	case err != nil:
		return translate(fmt.Errorf("sqlite: %w", err))
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
	db, release, err := b.database()
	if err != nil {
		return fmt.Errorf("sqlite: cancel: %w", err)
	}
	defer release()
	errCanceledAlready := errors.New("canceled already")
	err = durably(ctx, db, func(tx *sql.Tx) error {
		var previous backend.Status
		var jobID int64
		err := tx.QueryRowContext(ctx, "SELECT status, job_id FROM asyncreply_operation WHERE id = ?", id).Scan(&previous, &jobID)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return backend.ErrNotFound
		case err != nil:
			return translate(fmt.Errorf("sqlite: cancel: %w", err))
		case previous == backend.Canceled:
			return errCanceledAlready
		}
		var targets sql.NullString
		err = tx.QueryRowContext(ctx, `UPDATE asyncreply_operation SET status = 'Canceled', request = NULL, response = NULL,
			failure_status = NULL, failure_title = NULL, failure_detail = NULL, updated_at = ?, expires_at = ? + retention_us
			WHERE id = ? RETURNING targets`, micros(at), micros(at), id).Scan(&targets)
		if err != nil {
			return translate(fmt.Errorf("sqlite: cancel: %w", err))
		}
		if !previous.Done() {
			if err := b.scheduleDeliveries(ctx, tx, id, backend.Canceled, targets); err != nil {
				return err
			}
			if _, err := b.river.JobCancelTx(ctx, tx, jobID); err != nil && !errors.Is(err, rivertype.ErrNotFound) {
				return translate(fmt.Errorf("sqlite: cancel: canceling the job: %w", err))
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errCanceledAlready):
		return nil
	case err != nil:
		return err
	}
	b.watchers.Notify(id)
	return nil
}

// MarkCollected implements backend.Backend. SQLite lets one writer at a
// time change the row, so of concurrent calls, in any process, only the
// first finds collected_at NULL.
func (b *Backend) MarkCollected(ctx context.Context, id string, at time.Time) (bool, error) {
	db, release, err := b.database()
	if err != nil {
		return false, fmt.Errorf("sqlite: mark collected: %w", err)
	}
	defer release()
	result, err := db.ExecContext(ctx, `UPDATE asyncreply_operation SET collected_at = ?
		WHERE id = ? AND status = 'Succeeded' AND collected_at IS NULL`, micros(at), id)
	if err != nil {
		return false, translate(fmt.Errorf("sqlite: mark collected: %w", err))
	}
	n, err := result.RowsAffected()
	if err != nil {
		return false, translate(fmt.Errorf("sqlite: mark collected: %w", err))
	}
	if n == 1 {
		return true, nil
	}
	if err := whyUnchanged(ctx, db, id); !errors.Is(err, backend.ErrFinished) {
		return false, err
	}
	return false, nil // collected already, or nothing to collect
}

// Sweep implements backend.Backend. It also fails operations whose River job
// was discarded (its attempts used up while workers died), which no worker
// would otherwise ever finish.
func (b *Backend) Sweep(ctx context.Context, now time.Time) (int, error) {
	db, release, err := b.database()
	if err != nil {
		return 0, fmt.Errorf("sqlite: sweep: %w", err)
	}
	defer release()
	if err := b.reschedule(ctx, db); err != nil {
		return 0, err
	}
	var orphaned []string
	err = inTx(ctx, db, func(tx *sql.Tx) error {
		var err error
		orphaned, err = b.failOrphaned(ctx, tx, now)
		return err
	})
	if err != nil {
		return 0, translate(fmt.Errorf("sqlite: sweep: %w", err))
	}
	for _, id := range orphaned {
		b.watchers.Notify(id)
	}
	var n int64
	err = inTx(ctx, db, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM asyncreply_delivery WHERE operation_id IN (
			SELECT id FROM asyncreply_operation WHERE expires_at <= ?)`, micros(now))
		if err != nil {
			return err
		}
		result, err := tx.ExecContext(ctx, "DELETE FROM asyncreply_operation WHERE expires_at <= ?", micros(now))
		if err != nil {
			return err
		}
		n, err = result.RowsAffected()
		return err
	})
	if err != nil {
		return 0, translate(fmt.Errorf("sqlite: sweep: %w", err))
	}
	return int(n), nil
}

// listedColumns are columns with NULL for the request and the response,
// which a listing does not load.
const listedColumns = `id, owner, idempotency_key, fingerprint, status, progress_percent, progress_message,
	attempt, NULL, NULL, failure_status, failure_title, failure_detail,
	timeout_us, retention_us, created_at, updated_at, expires_at, collected_at, targets`

// List implements backend.Lister, walking asyncreply_operation_owner_created
// (or, for every owner, asyncreply_operation_created) from the page token.
func (b *Backend) List(ctx context.Context, q backend.ListQuery) (backend.ListPage, error) {
	cursor, paging, err := listing.DecodeToken(q)
	if err != nil {
		return backend.ListPage{}, fmt.Errorf("sqlite: list: %w", err)
	}
	db, release, err := b.database()
	if err != nil {
		return backend.ListPage{}, fmt.Errorf("sqlite: list: %w", err)
	}
	defer release()
	statement, args := listStatement(q, cursor, paging)
	rows, err := db.QueryContext(ctx, statement, args...)
	if err != nil {
		return backend.ListPage{}, translate(fmt.Errorf("sqlite: list: %w", err))
	}
	defer rows.Close()
	var ops []*backend.Operation
	for rows.Next() {
		op, err := scanOperation(rows)
		if err != nil {
			return backend.ListPage{}, translate(fmt.Errorf("sqlite: list: %w", err))
		}
		ops = append(ops, op)
	}
	if err := rows.Err(); err != nil {
		return backend.ListPage{}, translate(fmt.Errorf("sqlite: list: %w", err))
	}
	return listing.Page(q, ops), nil
}

// listStatement is the query and arguments of List, a page and one more
// operation, after cursor when paging.
func listStatement(q backend.ListQuery, cursor listing.Cursor, paging bool) (string, []any) {
	where, args := visible(q.Owner, q.AnyOwner, q.Now)
	statuses := listing.Statuses(q)
	where += " AND status IN (" + strings.TrimSuffix(strings.Repeat("?, ", len(statuses)), ", ") + ")"
	for _, s := range statuses {
		args = append(args, string(s))
	}
	if !q.CreatedAfter.IsZero() {
		where += " AND created_at > ?"
		args = append(args, micros(q.CreatedAfter))
	}
	if !q.CreatedBefore.IsZero() {
		where += " AND created_at < ?"
		args = append(args, micros(q.CreatedBefore))
	}
	if paging {
		where += " AND (created_at, id) < (?, ?)"
		args = append(args, micros(cursor.CreatedAt), cursor.ID)
	}
	args = append(args, listing.PageSize(q)+1)
	return "SELECT " + listedColumns + " FROM asyncreply_operation WHERE " + where +
		" ORDER BY created_at DESC, id DESC LIMIT ?", args
}

// Changes implements backend.ChangeLister, walking
// asyncreply_operation_owner_updated (or, for every owner,
// asyncreply_operation_updated) forwards from the cursor.
func (b *Backend) Changes(ctx context.Context, q backend.ChangeQuery) ([]*backend.Operation, error) {
	after, err := listing.ChangeCursor(q)
	if err != nil {
		return nil, fmt.Errorf("sqlite: changes: %w", err)
	}
	db, release, err := b.database()
	if err != nil {
		return nil, fmt.Errorf("sqlite: changes: %w", err)
	}
	defer release()
	statement, args := changesStatement(q, after)
	rows, err := db.QueryContext(ctx, statement, args...)
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: changes: %w", err))
	}
	defer rows.Close()
	var ops []*backend.Operation
	for rows.Next() {
		op, err := scanOperation(rows)
		if err != nil {
			return nil, translate(fmt.Errorf("sqlite: changes: %w", err))
		}
		ops = append(ops, op)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(fmt.Errorf("sqlite: changes: %w", err))
	}
	return ops, nil
}

// changesStatement is the query and arguments of Changes.
func changesStatement(q backend.ChangeQuery, after backend.ChangeCursor) (string, []any) {
	where := "(expires_at IS NULL OR expires_at > ?) AND (updated_at, id) > (?, ?)"
	args := []any{micros(q.Now), micros(after.UpdatedAt), after.ID}
	if after == (backend.ChangeCursor{}) {
		where = "(expires_at IS NULL OR expires_at > ?)"
		args = args[:1]
	}
	if !q.AnyOwner {
		where = "owner = ? AND " + where
		args = append([]any{q.Owner}, args...)
	}
	args = append(args, listing.ChangeLimit(q))
	return "SELECT " + listedColumns + " FROM asyncreply_operation WHERE " + where + " ORDER BY updated_at, id LIMIT ?", args
}

// CountByStatus implements backend.Lister.
func (b *Backend) CountByStatus(ctx context.Context, q backend.CountQuery) (map[backend.Status]int, error) {
	where, args := visible(q.Owner, q.AnyOwner, q.Now)
	db, release, err := b.database()
	if err != nil {
		return nil, fmt.Errorf("sqlite: count by status: %w", err)
	}
	defer release()
	rows, err := db.QueryContext(ctx, "SELECT status, count(*) FROM asyncreply_operation WHERE "+where+" GROUP BY status", args...)
	if err != nil {
		return nil, translate(fmt.Errorf("sqlite: count by status: %w", err))
	}
	defer rows.Close()
	counts := listing.Counts()
	for rows.Next() {
		var status backend.Status
		var n int
		if err := rows.Scan(&status, &n); err != nil {
			return nil, translate(fmt.Errorf("sqlite: count by status: %w", err))
		}
		counts[status] = n
	}
	if err := rows.Err(); err != nil {
		return nil, translate(fmt.Errorf("sqlite: count by status: %w", err))
	}
	return counts, nil
}

// visible is the condition, and its arguments, of the operations a listing
// or a count of owner's (or anyOwner's) shows at now: neither canceled nor
// expired.
func visible(owner string, anyOwner bool, now time.Time) (where string, args []any) {
	where = "status <> 'Canceled' AND (expires_at IS NULL OR expires_at > ?)"
	args = []any{micros(now)}
	if !anyOwner {
		where = "owner = ? AND " + where
		args = append([]any{owner}, args...)
	}
	return where, args
}

// reschedule gives a new job to every unfinished operation whose job was
// taken by a process that has died: one whose lock is free (see
// processlock.go), or one silent for deadAfter, the only sign for a process
// whose lock cannot be tested. River would rescue the job only after the
// operation's whole timeout, ten minutes by default. The old job is
// canceled, so that River's rescuer does not run it again. Liveness is
// judged by the real clock, whatever the sweep's now.
func (b *Backend) reschedule(ctx context.Context, db *sql.DB) error {
	deadLocks, err := lockDeadProcesses(b.path)
	if err != nil {
		b.logger.Warn("asyncreply: sqlite: reading which processes died failed; judging them by their heartbeat alone", "error", err)
	}
	rescheduled := false
	defer func() {
		for _, l := range deadLocks {
			if rescheduled {
				l.release()
			} else {
				l.unlock()
			}
		}
	}()
	dead, err := json.Marshal(processIDs(deadLocks))
	if err != nil {
		return fmt.Errorf("sqlite: sweep: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return translate(fmt.Errorf("sqlite: sweep: %w", err))
	}
	defer tx.Rollback()
	alive := micros(time.Now().Add(-b.deadAfter))
	rows, err := tx.QueryContext(ctx, `SELECT op.id, op.timeout_us, job.id FROM asyncreply_operation AS op
		JOIN river_job AS job ON job.id = op.job_id
		WHERE op.`+unfinished+` AND job.state = 'running' AND (
			json_extract(job.attempted_by, '$[#-1]') IN (SELECT value FROM json_each(?))
			OR NOT EXISTS (
				SELECT 1 FROM asyncreply_process AS p
				WHERE p.id = json_extract(job.attempted_by, '$[#-1]') AND p.seen_at > ?))`, string(dead), alive)
	if err != nil {
		return translate(fmt.Errorf("sqlite: sweep: %w", err))
	}
	type lost struct {
		id      string
		timeout time.Duration
		job     int64
	}
	var found []lost
	for rows.Next() {
		var l lost
		var timeoutUS int64
		if err := rows.Scan(&l.id, &timeoutUS, &l.job); err != nil {
			rows.Close()
			return translate(fmt.Errorf("sqlite: sweep: %w", err))
		}
		l.timeout = time.Duration(timeoutUS) * time.Microsecond
		found = append(found, l)
	}
	if err := rows.Err(); err != nil {
		return translate(fmt.Errorf("sqlite: sweep: %w", err))
	}
	for _, l := range found {
		job, err := b.river.InsertTx(ctx, tx, riverjob.Args{OperationID: l.id, Timeout: l.timeout}, riverjob.ResumeOpts())
		if err != nil {
			return translate(fmt.Errorf("sqlite: sweep: rescheduling: %w", err))
		}
		if _, err := tx.ExecContext(ctx, "UPDATE asyncreply_operation SET job_id = ? WHERE id = ?", job.Job.ID, l.id); err != nil {
			return translate(fmt.Errorf("sqlite: sweep: rescheduling: %w", err))
		}
		if _, err := b.river.JobCancelTx(ctx, tx, l.job); err != nil && !errors.Is(err, rivertype.ErrNotFound) {
			return translate(fmt.Errorf("sqlite: sweep: canceling a lost job: %w", err))
		}
	}
	if n, err := b.rescheduleDeliveries(ctx, tx, string(dead), alive); err != nil {
		return err
	} else if n > 0 {
		b.logger.Warn("asyncreply: sqlite: deliveries whose process died were given a new job", "deliveries", n)
	}
	// The records of dead processes go too; a live process whose record
	// went for its silence writes it again at its next beat.
	if _, err := tx.ExecContext(ctx, "DELETE FROM asyncreply_process WHERE seen_at <= ? OR id IN (SELECT value FROM json_each(?))",
		alive, string(dead)); err != nil {
		return translate(fmt.Errorf("sqlite: sweep: %w", err))
	}
	if err := tx.Commit(); err != nil {
		return translate(fmt.Errorf("sqlite: sweep: %w", err))
	}
	rescheduled = true
	if len(found) > 0 {
		b.logger.Warn("asyncreply: sqlite: operations whose process died were given a new job", "operations", len(found))
	}
	return nil
}

// failOrphaned fails, in tx, the operations whose job was discarded, and
// schedules their deliveries.
func (b *Backend) failOrphaned(ctx context.Context, tx *sql.Tx, now time.Time) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `UPDATE asyncreply_operation SET status = 'Failed', request = NULL,
			failure_status = ?, failure_title = ?, failure_detail = ?,
			updated_at = ?, expires_at = ? + retention_us
		WHERE `+unfinished+` AND EXISTS (
			SELECT 1 FROM river_job WHERE river_job.id = asyncreply_operation.job_id AND river_job.state = 'discarded'
		)
		RETURNING id, targets`, riverjob.Abandoned.Status, riverjob.Abandoned.Title, riverjob.Abandoned.Detail, micros(now), micros(now))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	var targets []sql.NullString
	for rows.Next() {
		var id string
		var t sql.NullString
		if err := rows.Scan(&id, &t); err != nil {
			return nil, err
		}
		ids, targets = append(ids, id), append(targets, t)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	for i, id := range ids {
		if err := b.scheduleDeliveries(ctx, tx, id, backend.Failed, targets[i]); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// Watch implements backend.Backend. A watcher may be woken twice for a
// change made in its own process: at once, and again by the poller.
func (b *Backend) Watch(ctx context.Context, id string) (<-chan struct{}, func(), error) {
	changes, stop := b.watchers.Watch(id)
	select {
	case b.watchBegun <- struct{}{}:
	default: // the poller has a wake-up pending already
	}
	return changes, stop, nil
}

// Start implements backend.Backend. It takes this process's lock first,
// then gives a new job to the operations of processes that died on this
// machine — this one's previous run, most often — so that they run again at
// once rather than after their heartbeat's silence and the next sweep.
func (b *Backend) Start(ctx context.Context, execute backend.ExecuteFunc) error {
	if err := b.holdProcessLock(); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	db, release, err := b.database()
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	err = b.reschedule(ctx, db)
	release()
	if err != nil {
		b.logger.Warn("asyncreply: sqlite: rescheduling the operations of dead processes failed; the next sweep will", "error", err)
	}
	if err := b.worker.Start(ctx, b.river, execute); err != nil {
		return translate(fmt.Errorf("sqlite: %w", err))
	}
	return nil
}

// holdProcessLock takes this process's lock, unless a failed Start took it
// already.
func (b *Backend) holdProcessLock() error {
	b.processMu.Lock()
	defer b.processMu.Unlock()
	if b.processLock != nil {
		return nil
	}
	l, err := lockProcess(b.path, b.processID)
	if err != nil {
		return err
	}
	b.processLock = l
	return nil
}

// releaseProcessLock releases this process's lock once it executes no
// more, deleting its file.
func (b *Backend) releaseProcessLock() {
	b.processMu.Lock()
	defer b.processMu.Unlock()
	b.processLock.release()
	b.processLock = nil
}

// Stop implements backend.Backend. Operations canceled by Stop go back to
// River's queue without losing an attempt, for another process or the next
// start to run.
//
// Stop closes the backend's database. The operations stay in the file, and
// calls after Stop still read and change them, each opening the file for
// itself; watchers are no longer woken for other processes' changes.
func (b *Backend) Stop(ctx context.Context) error {
	var err error
	b.stopOnce.Do(func() {
		err = b.worker.Stop(ctx, b.river)
		b.releaseProcessLock()
		b.stopPoller()
		b.polling.Wait()
		b.dbMu.Lock() // waits for calls in flight, Creates included
		defer b.dbMu.Unlock()
		b.creates.Stop()
		b.changes.stop()
		if closeErr := b.db.Close(); closeErr != nil {
			err = errors.Join(err, fmt.Errorf("sqlite: closing the database: %w", closeErr))
		}
		b.db = nil
	})
	return err
}

// database returns the database for one call, and the function that ends
// its use. Until Stop, that is the backend's own. Stop closes it, so that
// nothing of the backend outlives Stop, but the operations stay in the file
// and callers may still read and change them: each call then opens the file
// for itself and closes it before it returns.
func (b *Backend) database() (db *sql.DB, release func(), err error) {
	b.dbMu.RLock()
	if b.db != nil {
		return b.db, b.dbMu.RUnlock, nil
	}
	b.dbMu.RUnlock()
	db, err = Open(b.path)
	if err != nil {
		return nil, nil, err
	}
	return db, func() { db.Close() }, nil
}

// pollBatch bounds the rows one poll reads at once.
const pollBatch = 500

// poll wakes this process's watchers for the changes other processes make,
// reading them from the file every pollInterval while anyone watches, until
// ctx ends. It idles while nobody watches.
func (b *Backend) poll(ctx context.Context) {
	defer b.polling.Done()
	var seen int64 // the change counter up to which watchers have been woken
	following := false
	wait := b.pollInterval
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if !b.watchers.Watched() {
			following = false
			select {
			case <-ctx.Done():
				return
			case <-b.watchBegun:
				continue
			}
		}
		var err error
		if following {
			seen, err = b.notifyChangesAfter(ctx, seen)
		} else {
			// Changes made while nobody watched were not followed: follow from
			// now on, and wake every watcher to re-read what happened between
			// its watch and now.
			seen, err = b.changeCounter(ctx)
			if err == nil {
				following = true
				b.watchers.NotifyAll()
			}
		}
		switch {
		case err == nil:
			wait = b.pollInterval
		case ctx.Err() != nil:
			return
		default:
			// Nothing is missed meanwhile: the next poll reads from seen on.
			wait = min(2*wait, max(5*time.Second, b.pollInterval))
			b.logger.Warn("asyncreply: sqlite: polling for changes failed; retrying", "error", err, "retry_in", wait)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
	}
}

// notifyChangesAfter wakes the watchers of the operations changed after
// version seen and returns the version up to which it has.
func (b *Backend) notifyChangesAfter(ctx context.Context, seen int64) (int64, error) {
	for {
		ids, last, err := b.changesAfter(ctx, seen)
		if err != nil {
			return seen, err
		}
		for _, id := range ids {
			b.watchers.Notify(id)
		}
		seen = last
		if len(ids) < pollBatch {
			return seen, nil
		}
	}
}

func (b *Backend) changeCounter(ctx context.Context) (int64, error) {
	db, release, err := b.database()
	if err != nil {
		return 0, err
	}
	defer release()
	var version int64
	err = db.QueryRowContext(ctx, "SELECT version FROM asyncreply_change").Scan(&version)
	return version, err
}

func (b *Backend) changesAfter(ctx context.Context, seen int64) (ids []string, last int64, err error) {
	db, release, err := b.database()
	if err != nil {
		return nil, seen, err
	}
	defer release()
	rows, err := db.QueryContext(ctx, "SELECT id, version FROM asyncreply_operation WHERE version > ? ORDER BY version LIMIT ?",
		seen, pollBatch)
	if err != nil {
		return nil, seen, err
	}
	defer rows.Close()
	last = seen
	for rows.Next() {
		var id string
		if err := rows.Scan(&id, &last); err != nil {
			return nil, seen, err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, seen, err
	}
	return ids, last, nil
}

// translate marks errors that mean the database could not be used as
// backend.ErrUnavailable, so that callers answer 503: the file is locked by
// another process for longer than the busy timeout or the caller waits, or
// the disk failed or is full.
func translate(err error) error {
	if err == nil || errors.Is(err, backend.ErrUnavailable) || errors.Is(err, context.Canceled) {
		return err
	}
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) {
		switch sqliteErr.Code() & 0xff { // the primary code of an extended one
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
			sqlite3.SQLITE_FULL, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_READONLY:
			return fmt.Errorf("%w: %w", backend.ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn) {
		return fmt.Errorf("%w: %w", backend.ErrUnavailable, err)
	}
	return err
}

// micros is how times are stored: unix microseconds, which round-trip
// exactly the microsecond precision the backend keeps.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// exec runs one statement on the backend's database.
func (b *Backend) exec(ctx context.Context, statement string, args ...any) error {
	db, release, err := b.database()
	if err != nil {
		return err
	}
	defer release()
	_, err = db.ExecContext(ctx, statement, args...)
	return translate(err)
}
