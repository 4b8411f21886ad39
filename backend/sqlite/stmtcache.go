package sqlite

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"
	"reflect"
	"sync"
)

// stmtCacheSize bounds the prepared statements each connection keeps. The
// backend and River issue a few dozen distinct statements; those built for
// one call (listings with their filters) take the least recently used
// places.
const stmtCacheSize = 128

// The SQLite driver prepares, that is parses and plans, every statement
// anew for each call through database/sql, and gives the prepared statement
// up once the call returns. Parsing dominated the backend's CPU profile:
// 45% of the accept-and-execute path, River's long statements (its job
// insert, its fetch, the completer's per-job update) parsed once per job.
// stmtCacheConnector's connections keep each statement prepared, keyed by
// its text, and run it again with new arguments: SQLite resets it between
// runs, so that it holds no snapshot or lock meanwhile, and re-prepares it
// by itself should the schema change.
type stmtCacheConnector struct{ driver.Connector }

// Connect implements driver.Connector.
func (c stmtCacheConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	inner, ok := conn.(stmtCacheInner)
	if !ok {
		conn.Close()
		return nil, errors.New("sqlite: the driver's connection lacks the methods the statement cache wraps")
	}
	return &stmtCacheConn{stmtCacheInner: inner, byQuery: make(map[string]*list.Element)}, nil
}

// stmtCacheInner is what stmtCacheConn needs of the SQLite driver's
// connections, and passes through.
type stmtCacheInner interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// stmtCacheConn is one connection with its prepared statements.
type stmtCacheConn struct {
	stmtCacheInner

	mu      sync.Mutex
	byQuery map[string]*list.Element // of *cachedStmt
	recent  list.List                // most recently used first
}

type cachedStmt struct {
	query string
	stmt  driver.Stmt
	busy  bool // its rows are being read: a second use prepares its own
}

var (
	_ driver.ExecerContext  = (*stmtCacheConn)(nil)
	_ driver.QueryerContext = (*stmtCacheConn)(nil)
)

// take returns the prepared statement of query, preparing it if the cache
// has none, marked busy. A statement whose rows are still open is not
// shared: take returns nil for it, and the call prepares as without cache.
func (c *stmtCacheConn) take(ctx context.Context, query string) (*cachedStmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byQuery[query]; ok {
		cs := e.Value.(*cachedStmt)
		if cs.busy {
			return nil, nil
		}
		c.recent.MoveToFront(e)
		cs.busy = true
		return cs, nil
	}
	stmt, err := c.stmtCacheInner.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	for c.recent.Len() >= stmtCacheSize {
		oldest := c.recent.Back()
		old := oldest.Value.(*cachedStmt)
		if old.busy {
			break // in use: kept for now, the cache a little over its size
		}
		c.recent.Remove(oldest)
		delete(c.byQuery, old.query)
		old.stmt.Close()
	}
	cs := &cachedStmt{query: query, stmt: stmt, busy: true}
	c.byQuery[query] = c.recent.PushFront(cs)
	return cs, nil
}

// Unwrap returns the SQLite driver's connection, as that driver asks of
// wrappers.
func (c *stmtCacheConn) Unwrap() driver.Conn { return c.stmtCacheInner }

func (c *stmtCacheConn) give(cs *cachedStmt) {
	c.mu.Lock()
	cs.busy = false
	c.mu.Unlock()
}

// ExecContext implements driver.ExecerContext.
func (c *stmtCacheConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.take(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.stmtCacheInner.ExecContext(ctx, query, args)
	}
	defer c.give(cs)
	return cs.stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

// QueryContext implements driver.QueryerContext.
func (c *stmtCacheConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.take(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.stmtCacheInner.QueryContext(ctx, query, args)
	}
	rows, err := cs.stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		c.give(cs)
		return nil, err
	}
	return &cachedRows{Rows: rows, release: func() { c.give(cs) }}, nil
}

// Close implements driver.Conn, closing the prepared statements first.
func (c *stmtCacheConn) Close() error {
	c.mu.Lock()
	var errs []error
	for e := c.recent.Front(); e != nil; e = e.Next() {
		errs = append(errs, e.Value.(*cachedStmt).stmt.Close())
	}
	c.recent.Init()
	clear(c.byQuery)
	c.mu.Unlock()
	return errors.Join(append(errs, c.stmtCacheInner.Close())...)
}

// cachedRows gives its statement back to the cache once closed: SQLite
// resets the statement then.
type cachedRows struct {
	driver.Rows
	release func()
	once    sync.Once
}

// Close implements driver.Rows.
func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.once.Do(r.release)
	return err
}

// The column types of the rows, as the SQLite driver reports them.

func (r *cachedRows) ColumnTypeDatabaseTypeName(index int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(index)
	}
	return ""
}

func (r *cachedRows) ColumnTypeLength(index int) (length int64, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(index)
	}
	return 0, false
}

func (r *cachedRows) ColumnTypeNullable(index int) (nullable, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(index)
	}
	return false, false
}

func (r *cachedRows) ColumnTypePrecisionScale(index int) (precision, scale int64, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(index)
	}
	return 0, 0, false
}

func (r *cachedRows) ColumnTypeScanType(index int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(index)
	}
	return reflect.TypeFor[any]()
}
