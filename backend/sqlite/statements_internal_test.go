package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"modernc.org/sqlite"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// statementsPerOperation bounds the statements one operation accepted over
// HTTP and executed costs the backend and River together, on average, with
// 16 clients submitting at once: its job's insert, its row's, its share of
// a fetch, the Running and completion updates, its share of River's
// completion of its job. Periodic statements (River's listener polling its
// notifications, leader election, heartbeats, sweeps) add a share that
// shrinks as the load grows. The measured mix is in bench/RESULTS.md.
const statementsPerOperation = 8

// One accepted and executed operation costs a handful of statements, not
// one per watcher, retry or poll: the count the load harness's SQLite
// ceiling is built from. The test logs the mix by statement kind, with the
// time each kind held the connection (go test -run StatementsPerOperation
// -v); the bound is what an operation costs when nothing is batched.
func TestStatementsPerOperation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	path := filepath.Join(t.TempDir(), "asyncreply.db")
	plain, err := Open(path) // for its DSN's pragmas, then replaced by a counting connection
	if err != nil {
		t.Fatal(err)
	}
	plain.Close()
	connector, err := sqlite.NewConnector(dsn(filepath.ToSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	counts := &statementCounts{byKind: map[string]int{}, spent: map[string]time.Duration{}}
	db := sql.OpenDB(countingConnector{stmtCacheConnector{connector}, counts})
	db.SetMaxOpenConns(1)
	b, err := newBackend(ctx, db, Config{Path: path, Concurrency: DefaultConcurrency, RescueAfter: DefaultRescueAfter,
		PollInterval: DefaultPollInterval, HeartbeatInterval: DefaultHeartbeatInterval, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(context.Background())

	const operations, clients = 1000, 16
	var executed atomic.Int64
	allExecuted := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "report")
		if executed.Add(1) == operations {
			close(allExecuted)
		}
	})))
	ar, err := asyncreply.New(asyncreply.Config{Backend: b, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ar.Handler(mux))
	defer srv.Close()
	defer ar.Shutdown(context.Background())

	counts.reset()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= operations {
				resp, err := http.Get(srv.URL + "/reports/7")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					t.Errorf("status %d, want 202", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	testwait.Recv(t, allExecuted, "every operation executed")
	// River completes jobs in batches after the executions return, the last
	// as it stops.
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	total := counts.snapshot()
	t.Logf("statements per accepted and executed operation, %d operations, %d clients:\n%s", operations, clients, counts.table(operations))
	if perOp := float64(total) / operations; perOp > statementsPerOperation {
		t.Errorf("%.1f statements per operation, want at most %d", perOp, statementsPerOperation)
	}
}

// statementCounts counts the statements run on a database by kind: the
// verb and the table ("UPDATE river_job"), transactions as BEGIN and
// COMMIT.
type statementCounts struct {
	mu     sync.Mutex
	byKind map[string]int
	spent  map[string]time.Duration // in the driver, rows read included
}

func (c *statementCounts) add(kind string) {
	c.mu.Lock()
	c.byKind[kind]++
	c.mu.Unlock()
}

func (c *statementCounts) took(kind string, d time.Duration) {
	c.mu.Lock()
	c.spent[kind] += d
	c.mu.Unlock()
}

func (c *statementCounts) reset() {
	c.mu.Lock()
	clear(c.byKind)
	clear(c.spent)
	c.mu.Unlock()
}

// snapshot returns the statements counted, transactions' BEGIN and COMMIT
// left out.
func (c *statementCounts) snapshot() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for kind, count := range c.byKind {
		if kind != "BEGIN" && !strings.HasPrefix(kind, "COMMIT") {
			n += count
		}
	}
	return n
}

func (c *statementCounts) table(operations int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds := make([]string, 0, len(c.byKind))
	for k := range c.byKind {
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b string) int { return c.byKind[b] - c.byKind[a] })
	var sb strings.Builder
	var spent time.Duration
	fmt.Fprintf(&sb, "%8s  %9s  %10s  %11s  %s\n", "count", "per op", "µs each", "µs per op", "statement")
	for _, k := range kinds {
		n := c.byKind[k]
		fmt.Fprintf(&sb, "%8d  %9.3f  %10.1f  %11.1f  %s\n", n, float64(n)/float64(operations),
			float64(c.spent[k].Microseconds())/float64(n), float64(c.spent[k].Microseconds())/float64(operations), k)
		spent += c.spent[k]
	}
	fmt.Fprintf(&sb, "time on the connection per operation: %.1f µs\n", float64(spent.Microseconds())/float64(operations))
	return sb.String()
}

var (
	sqlComment   = regexp.MustCompile(`(?s)/\*.*?\*/|--[^\n]*`)
	statementKey = regexp.MustCompile(`(?i)^\s*(WITH\b.*?\)\s*)?(SELECT|INSERT|UPDATE|DELETE|PRAGMA|BEGIN|COMMIT|ROLLBACK|CREATE|ALTER|DROP)\b(?:.*?\b(?:INTO|FROM|UPDATE)\s+|\s+(?:OR\s+\w+\s+)?)?([\w.]+)?`)
)

// statementKind is the verb and the first table a statement names.
func statementKind(query string) string {
	q := strings.Join(strings.Fields(sqlComment.ReplaceAllString(query, " ")), " ")
	m := statementKey.FindStringSubmatch(q)
	if m == nil {
		return q[:min(len(q), 40)]
	}
	verb := strings.ToUpper(m[2])
	switch verb {
	case "UPDATE", "PRAGMA":
		if f := strings.Fields(q); len(f) > 1 {
			return verb + " " + strings.TrimRight(f[1], ";")
		}
	case "SELECT":
		if i := strings.Index(strings.ToUpper(q), " FROM "); i >= 0 {
			return verb + " " + strings.Fields(q[i+6:])[0]
		}
		return verb
	}
	return strings.TrimSpace(verb + " " + m[3])
}

// countingConnector counts the statements its connections run.
type countingConnector struct {
	driver.Connector
	counts *statementCounts
}

func (c countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{stmtCacheConn: conn.(*stmtCacheConn), counts: c.counts}, nil
}

type countingConn struct {
	*stmtCacheConn
	counts  *statementCounts
	durable bool // between PRAGMA synchronous = FULL and = NORMAL
}

func (c *countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	kind := statementKind(query)
	if kind == "PRAGMA synchronous" {
		c.durable = strings.Contains(query, "FULL")
	}
	c.counts.add(kind)
	defer c.since(kind, time.Now())
	return c.stmtCacheConn.ExecContext(ctx, query, args)
}

func (c *countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	kind := statementKind(query)
	c.counts.add(kind)
	defer c.since(kind, time.Now())
	rows, err := c.stmtCacheConn.QueryContext(ctx, query, args)
	if err != nil {
		return nil, err
	}
	return &countingRows{rows, kind, c}, nil
}

func (c *countingConn) since(kind string, start time.Time) { c.counts.took(kind, time.Since(start)) }

func (c *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	c.counts.add("BEGIN")
	defer c.since("BEGIN", time.Now())
	tx, err := c.stmtCacheConn.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return countingTx{tx, c}, nil
}

type countingTx struct {
	driver.Tx
	conn *countingConn
}

func (tx countingTx) Commit() error {
	kind := "COMMIT"
	if tx.conn.durable {
		kind += " (synchronous=FULL)"
	}
	tx.conn.counts.add(kind)
	defer tx.conn.since(kind, time.Now())
	return tx.Tx.Commit()
}

// countingRows adds the time spent reading rows, and closing them, to
// their statement's.
type countingRows struct {
	driver.Rows
	kind string
	conn *countingConn
}

func (r *countingRows) Next(dest []driver.Value) error {
	defer r.conn.since(r.kind, time.Now())
	return r.Rows.Next(dest)
}

func (r *countingRows) Close() error {
	defer r.conn.since(r.kind, time.Now())
	return r.Rows.Close()
}
