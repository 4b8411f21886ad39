package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asyncreply/asyncreply/backend/sqlite"
	"github.com/asyncreply/asyncreply/bench/load"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// ceilingBatch is how many operations the ceiling accepts per transaction:
// the most the backend's group commit gathers from 16 clients.
const ceilingBatch = 16

// sqliteCeilingScenario: the rate at which SQLite itself runs the
// statements one accepted and executed operation costs the SQLite
// backend, beside the backend's own accept-and-execute rate, taking turns.
func sqliteCeilingScenario(ctx context.Context, e *env) (section, error) {
	s := section{
		title: "SQLite ceiling",
		intro: fmt.Sprintf(`The SQLite backend's accept-and-execute rate (as in Accept: 16 clients over
loopback HTTP, every operation executed before the run ends) beside the
rate at which SQLite itself runs the statements those operations cost,
with nothing else: one goroutine on one connection of a new file opened
as the backend opens it (WAL, synchronous=NORMAL, synchronous=FULL for
the transaction that accepts), its schema migrated as the backend's, its
statements prepared once. Per
%d operations: one durable transaction inserting their River jobs (in one
statement) and their rows; one fetch of their jobs, as River's (an UPDATE … RETURNING);
one transaction marking each running (an UPDATE … RETURNING its row, as
MarkRunning) and completing each (an UPDATE, as Complete), the change
counter's trigger firing for each; one transaction completing their jobs,
an UPDATE each, as River's completer. The ceiling's latency is that of
its accepting transactions, the least an accept could wait.`, ceilingBatch),
	}
	var stops stack
	defer stops.run()

	ceiling, err := openCeiling(ctx, e.dir)
	if err != nil {
		return s, err
	}
	stops.push(func() { ceiling.db.Close() })

	k := kind{"sqlite", true}
	var executed atomic.Int64
	srv, stop, err := e.serve(ctx, k, 0, briefRetention, benchutil.Reports(&executed))
	if err != nil {
		return s, err
	}
	stops.push(stop)
	ours := target{name: "sqlite", url: srv.URL + "/reports/7", want: http.StatusAccepted, settle: waitExecuted(executed.Load)}

	var base, subject measured
	rounds := max(e.opts.rounds, 1)
	turn := e.opts.duration / time.Duration(rounds)
	var ratios []float64
	for range rounds {
		c, err := ceiling.run(ctx, turn)
		if err != nil {
			return s, fmt.Errorf("ceiling: %w", err)
		}
		m, err := e.measure(ctx, ours, 0, turn)
		if err != nil {
			return s, err
		}
		ratios = append(ratios, m.Throughput()/c.Throughput())
		base.add(c)
		subject.add(m)
	}
	tbl := &table{header: []string{"target", "load", "requests", "throughput", "p50", "p99", "p99.9", "max", "allocated per request", "vs baseline"}}
	tbl.add(base, "baseline")
	tbl.add(subject, fmt.Sprintf("**%.3f×** the ceiling's throughput", subject.Throughput()/base.Throughput()))
	s.tables = append(s.tables, tbl)
	s.notes = append(s.notes, fmt.Sprintf("Ratio by round: %s.", formatRatios(ratios)))
	s.goals = append(s.goals,
		goal{what: "accept and execute, SQLite (throughput)", target: "≥ 2,000/s", measured: count(int(subject.Throughput())) + "/s",
			value: subject.Throughput(), met: subject.Throughput() >= 2000},
		goal{what: "accept and execute, SQLite, accept p99 at 16 clients", target: "< 50 ms", measured: ms(subject.Latency.Quantile(0.99)),
			value: float64(subject.Latency.Quantile(0.99)), met: subject.Latency.Quantile(0.99) < 50*time.Millisecond})
	return s, nil
}

func formatRatios(ratios []float64) string {
	out := ""
	for i, r := range ratios {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%.3f×", r)
	}
	return out
}

// ceiling runs the SQLite backend's statement mix on a file of its own.
type ceiling struct {
	db                *sql.DB
	request, response []byte
	seq               int
	// The statements, prepared once: what is measured is running them.
	insertJobs, insertOperation, fetchJobs, markRunning, complete, completeJob *sql.Stmt
}

func openCeiling(ctx context.Context, dir string) (*ceiling, error) {
	f, err := os.CreateTemp(dir, "ceiling-*.db")
	if err != nil {
		return nil, err
	}
	f.Close()
	db, err := sqlite.Open(f.Name())
	if err != nil {
		return nil, err
	}
	if err := sqlite.Migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	c := &ceiling{db: db, request: make([]byte, 300), response: make([]byte, 200)}
	rand.Read(c.request) // an encrypted recorded request, about its size
	rand.Read(c.response)
	values := make([]string, ceilingBatch)
	for i := range values {
		values[i] = fmt.Sprintf("(jsonb(?%d), 'asyncreply_operation', 10, jsonb('{}'), 2, 'asyncreply', 'available', ?1, ?1, jsonb('[]'))", i+2)
	}
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		// The jobs in one statement, as River's InsertManyTx.
		{&c.insertJobs, `INSERT INTO river_job (args, kind, max_attempts, metadata, priority, queue, state, scheduled_at, created_at, tags)
			VALUES ` + strings.Join(values, ", ") + ` RETURNING id, json_extract(args, '$.operation_id')`},
		{&c.insertOperation, `INSERT INTO asyncreply_operation (id, owner, idempotency_key, fingerprint, status,
			request, timeout_us, retention_us, created_at, updated_at, job_id)
			VALUES (?, '', '', NULL, 'NotStarted', ?, ?, ?, ?, ?, ?)`},
		{&c.fetchJobs, `UPDATE river_job SET attempt = attempt + 1, attempted_at = ?1,
				attempted_by = jsonb(json_array('ceiling')), state = 'running'
			WHERE id IN (SELECT id FROM river_job
				WHERE priority >= 0 AND queue = 'asyncreply' AND scheduled_at <= ?1 AND state = 'available'
				ORDER BY priority, scheduled_at, id LIMIT ?2)
			RETURNING id, json(args), attempt, json(attempted_by), json(metadata)`},
		{&c.markRunning, `UPDATE asyncreply_operation SET status = 'Running', attempt = attempt + 1, updated_at = ?
			WHERE id = ? AND status IN ('NotStarted', 'Running') RETURNING status, request`},
		{&c.complete, `UPDATE asyncreply_operation SET status = 'Succeeded', response = ?, request = NULL,
			updated_at = ?, expires_at = ? + retention_us WHERE id = ? AND status IN ('NotStarted', 'Running')`},
		{&c.completeJob, `UPDATE river_job SET state = 'completed', finalized_at = ? WHERE id = ? AND state = 'running'`},
	} {
		if *p.stmt, err = db.PrepareContext(ctx, p.query); err != nil {
			db.Close()
			return nil, err
		}
	}
	return c, nil
}

// run runs batches of the mix for d, one after the other.
func (c *ceiling) run(ctx context.Context, d time.Duration) (measured, error) {
	res := load.Result{Latency: load.NewHistogram()}
	started := time.Now()
	for time.Since(started) < d {
		accepted, err := c.batch(ctx)
		if err != nil {
			return measured{}, err
		}
		for range ceilingBatch {
			res.Latency.Record(accepted)
		}
		res.Requests += ceilingBatch
	}
	res.Elapsed = time.Since(started)
	return measured{target: "SQLite ceiling", loop: fmt.Sprintf("one connection, batches of %d", ceilingBatch), Result: res}, nil
}

// batch accepts, fetches, runs and completes ceilingBatch operations, and
// returns how long accepting them took.
func (c *ceiling) batch(ctx context.Context) (accepted time.Duration, err error) {
	ids := make([]string, ceilingBatch)
	for i := range ids {
		c.seq++
		ids[i] = fmt.Sprintf("ceiling-%d-%s", c.seq, benchutil.NewID())
	}
	begun := time.Now()
	if err := c.accept(ctx, ids); err != nil {
		return 0, fmt.Errorf("accepting: %w", err)
	}
	accepted = time.Since(begun)

	jobs, err := c.fetch(ctx)
	if err != nil {
		return 0, fmt.Errorf("fetching: %w", err)
	}
	if err := c.execute(ctx, ids); err != nil {
		return 0, fmt.Errorf("executing: %w", err)
	}
	if err := c.completeJobs(ctx, jobs); err != nil {
		return 0, fmt.Errorf("completing jobs: %w", err)
	}
	return accepted, nil
}

func (c *ceiling) accept(ctx context.Context, ids []string) error {
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous = NORMAL")
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := time.Now()
	at := now.UTC().Format("2006-01-02 15:04:05.000")
	args := make([]any, 0, len(ids)+1)
	args = append(args, at)
	for _, id := range ids {
		args = append(args, `{"operation_id":"`+id+`","timeout":600000000000}`)
	}
	rows, err := tx.StmtContext(ctx, c.insertJobs).QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	jobs := make(map[string]int64, len(ids))
	for rows.Next() {
		var job int64
		var id string
		if err := rows.Scan(&job, &id); err != nil {
			rows.Close()
			return err
		}
		jobs[id] = job
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := tx.StmtContext(ctx, c.insertOperation).ExecContext(ctx,
			id, c.request, (10 * time.Minute).Microseconds(), (2 * time.Second).Microseconds(), now.UnixMicro(), now.UnixMicro(), jobs[id]); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (c *ceiling) fetch(ctx context.Context) ([]int64, error) {
	at := time.Now().UTC().Format("2006-01-02 15:04:05.000")
	rows, err := c.fetchJobs.QueryContext(ctx, at, ceilingBatch)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var jobs []int64
	for rows.Next() {
		var id int64
		var args, attempt, by, metadata any
		if err := rows.Scan(&id, &args, &attempt, &by, &metadata); err != nil {
			return nil, err
		}
		jobs = append(jobs, id)
	}
	return jobs, rows.Err()
}

// execute marks each operation running, then completes it, in one
// transaction, as the backend's shared transitions do at best.
func (c *ceiling) execute(ctx context.Context, ids []string) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, id := range ids {
		var status string
		var request []byte
		if err := tx.StmtContext(ctx, c.markRunning).QueryRowContext(ctx, time.Now().UnixMicro(), id).Scan(&status, &request); err != nil {
			return err
		}
	}
	for _, id := range ids {
		at := time.Now().UnixMicro()
		if _, err := tx.StmtContext(ctx, c.complete).ExecContext(ctx, c.response, at, at, id); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (c *ceiling) completeJobs(ctx context.Context, jobs []int64) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	at := time.Now().UTC().Format("2006-01-02 15:04:05.000")
	for _, id := range jobs {
		if _, err := tx.StmtContext(ctx, c.completeJob).ExecContext(ctx, at, id); err != nil {
			return err
		}
	}
	return tx.Commit()
}
