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
// ceiling is built from. The test logs the mix by statement kind.
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
	counts := &statementCounts{byKind: map[string]int{}}
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
}

func (c *statementCounts) add(kind string) {
	c.mu.Lock()
	c.byKind[kind]++
	c.mu.Unlock()
}

func (c *statementCounts) reset() {
	c.mu.Lock()
	clear(c.byKind)
	c.mu.Unlock()
}

// snapshot returns the statements counted, transactions' BEGIN and COMMIT
// left out.
func (c *statementCounts) snapshot() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for kind, count := range c.byKind {
		if kind != "BEGIN" && kind != "COMMIT" {
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
	for _, k := range kinds {
		fmt.Fprintf(&sb, "%8d  %6.3f/op  %s\n", c.byKind[k], float64(c.byKind[k])/float64(operations), k)
	}
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
	return &countingConn{conn.(*stmtCacheConn), c.counts}, nil
}

type countingConn struct {
	*stmtCacheConn
	counts *statementCounts
}

func (c *countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.counts.add(statementKind(query))
	return c.stmtCacheConn.ExecContext(ctx, query, args)
}

func (c *countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	c.counts.add(statementKind(query))
	return c.stmtCacheConn.QueryContext(ctx, query, args)
}

func (c *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	c.counts.add("BEGIN")
	tx, err := c.stmtCacheConn.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return countingTx{tx, c.counts}, nil
}

type countingTx struct {
	driver.Tx
	counts *statementCounts
}

func (tx countingTx) Commit() error {
	tx.counts.add("COMMIT")
	return tx.Tx.Commit()
}
