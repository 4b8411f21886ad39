package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults that ConfigurePool gives a pool whose URL does not set its own.
const (
	// DefaultConnectTimeout bounds opening a connection, TLS and
	// authentication included (libpq's connect_timeout). pgxpool would
	// otherwise wait two minutes for a server that accepts connections but
	// never answers, holding a place in the pool all that time.
	DefaultConnectTimeout = 3 * time.Second
	// DefaultStatementTimeout is the server's statement_timeout: no
	// statement runs longer, so a connection silent for longer while it
	// owes an answer is dead.
	DefaultStatementTimeout = 10 * time.Second
	// DefaultLockTimeout is the server's lock_timeout: a statement waiting
	// this long for a lock, held by a session whose client has vanished
	// say, fails (503) rather than waiting out the statement timeout.
	DefaultLockTimeout = 5 * time.Second
	// DefaultIdleInTransactionTimeout is the server's
	// idle_in_transaction_session_timeout: the server ends a session left
	// in a transaction by a client that has vanished, releasing its locks.
	DefaultIdleInTransactionTimeout = 10 * time.Second
	// DefaultPingTimeout is pgxpool's ping timeout (pool_ping_timeout): a
	// connection idle for more than a second is pinged before it is handed
	// out, and one that does not answer within this is dropped for the
	// next.
	DefaultPingTimeout = time.Second
)

// answerGrace is how much longer than statement_timeout a connection may
// owe an answer and stay silent: time for the server's cancellation of a
// statement to reach us.
const answerGrace = 3 * time.Second

// ConfigurePool prepares cfg, parsed from a database URL with
// pgxpool.ParseConfig, for a backend that must answer 503 at once while
// PostgreSQL is unreachable or hangs, and serve again within seconds once
// it answers. backendurl.Open calls it; call it on a pool of your own
// before giving it to Config.Pool.
//
// Each setting the URL leaves out gets its default: connect_timeout
// DefaultConnectTimeout, statement_timeout DefaultStatementTimeout,
// lock_timeout DefaultLockTimeout, idle_in_transaction_session_timeout
// DefaultIdleInTransactionTimeout and pool_ping_timeout DefaultPingTimeout.
// The URL's own values win, given as parameters of their own or in
// options=-c…; a connect_timeout or pool_ping_timeout of 0 counts as left
// out.
//
// A server that accepts connections but never answers defeats TCP: the
// connection stays up, and a query on it would wait for ever. pgxpool's
// periodic health check (HealthCheckPeriod) does not ping idle connections,
// so ConfigurePool also bounds how long a connection may owe an answer:
// one that has sent a query and heard nothing for statement_timeout plus
// 3 s is closed, and the pool drops it, whatever the context of the call
// (River fetches jobs with a context that never ends). A session that SETs
// a longer statement_timeout is still bound by the one it started with; a
// URL with statement_timeout=0 turns the bound off. A COMMIT waiting for a
// synchronous standby that is gone is cut off too, and reported as
// unavailable: a commit is acknowledged only once it is known.
//
// The server settings apply to every session of the pool: an application
// that shares its own pool with the backend and runs longer statements, or
// holds transactions open while it does other work, sets its own values in
// the URL.
func ConfigurePool(cfg *pgxpool.Config) {
	conn := cfg.ConnConfig
	if conn.ConnectTimeout <= 0 {
		conn.ConnectTimeout = DefaultConnectTimeout
	}
	if conn.RuntimeParams == nil {
		conn.RuntimeParams = make(map[string]string)
	}
	for name, value := range map[string]time.Duration{
		"statement_timeout":                   DefaultStatementTimeout,
		"lock_timeout":                        DefaultLockTimeout,
		"idle_in_transaction_session_timeout": DefaultIdleInTransactionTimeout,
	} {
		if _, set := serverSetting(conn.RuntimeParams, name); !set {
			conn.RuntimeParams[name] = strconv.FormatInt(value.Milliseconds(), 10) + "ms"
		}
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = DefaultPingTimeout
	}
	setting, _ := serverSetting(conn.RuntimeParams, "statement_timeout")
	statementTimeout, ok := parseServerDuration(setting)
	if !ok || statementTimeout == 0 {
		return // statements may run for ever: silence tells nothing
	}
	limit := statementTimeout + answerGrace
	previous := conn.AfterNetConnect
	conn.AfterNetConnect = func(ctx context.Context, config *pgconn.Config, nc net.Conn) (net.Conn, error) {
		if previous != nil {
			var err error
			if nc, err = previous(ctx, config, nc); err != nil {
				return nil, err
			}
		}
		return newAnswerDeadlineConn(nc, limit), nil
	}
}

// serverSetting returns the value a connection's startup parameters give
// the server setting name: as a parameter of its own, or in the options
// parameter as -c name=value or --name=value.
func serverSetting(params map[string]string, name string) (string, bool) {
	if value, ok := params[name]; ok {
		return value, true
	}
	fields := strings.Fields(params["options"])
	for i, field := range fields {
		if field == "-c" && i+1 < len(fields) {
			field = "--" + fields[i+1]
		}
		if value, ok := strings.CutPrefix(field, "--"+name+"="); ok {
			return value, true
		}
	}
	return "", false
}

// parseServerDuration parses a PostgreSQL time setting such as
// statement_timeout: a number, in milliseconds unless a unit follows.
func parseServerDuration(s string) (time.Duration, bool) {
	s = strings.TrimSpace(s)
	number := strings.TrimRightFunc(s, func(r rune) bool { return 'a' <= r && r <= 'z' || r == ' ' })
	units := map[string]time.Duration{
		"": time.Millisecond, "us": time.Microsecond, "ms": time.Millisecond, "s": time.Second,
		"min": time.Minute, "h": time.Hour, "d": 24 * time.Hour,
	}
	unit, known := units[strings.TrimSpace(s[len(number):])]
	n, err := strconv.ParseFloat(number, 64)
	if !known || err != nil || n < 0 {
		return 0, false
	}
	return time.Duration(n * float64(unit)), true
}

// answerDeadlineConn is a connection to PostgreSQL, after TLS, that fails
// its reads and writes once it has owed an answer for limit without
// hearing anything: pgconn then closes it. It follows the protocol's
// messages to know when an answer is owed: from a query, a sync, a
// function call or the startup message until the ReadyForQuery that ends
// it, and from a flush until the next ReadyForQuery. A connection that owes
// nothing — idle in the pool, or waiting for notifications — has no
// deadline of its own.
type answerDeadlineConn struct {
	net.Conn
	limit time.Duration

	mu            sync.Mutex
	sent, heard   messageStream
	owed          int       // answers (ReadyForQuery) owed
	flushed       bool      // a flush was sent since the last ReadyForQuery
	heardAt       time.Time // since when the connection has owed an answer, or last heard anything while it did
	readDeadline  time.Time // as pgconn set them
	writeDeadline time.Time
}

func newAnswerDeadlineConn(nc net.Conn, limit time.Duration) *answerDeadlineConn {
	// TLS, if any, was negotiated before: the client's first message is the
	// startup message, and every message of the server's has a type.
	return &answerDeadlineConn{Conn: nc, limit: limit, heard: messageStream{started: true}}
}

func (c *answerDeadlineConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	wasOwing := c.owing()
	c.sent.scan(b, func(kind byte) {
		switch kind {
		case startupMessage, 'Q', 'S', 'F':
			c.owed++
		case 'H':
			c.flushed = true
		}
	})
	if !wasOwing && c.owing() {
		c.heardAt = time.Now()
	}
	c.applyDeadlines()
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *answerDeadlineConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		c.heardAt = time.Now()
		c.heard.scan(b[:n], func(kind byte) {
			if kind == 'Z' {
				c.owed, c.flushed = max(c.owed-1, 0), false
			}
		})
		c.applyDeadlines()
		c.mu.Unlock()
	}
	return n, err
}

func (c *answerDeadlineConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline, c.writeDeadline = t, t
	return c.applyDeadlines()
}

func (c *answerDeadlineConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	return c.applyDeadlines()
}

func (c *answerDeadlineConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeDeadline = t
	return c.applyDeadlines()
}

func (c *answerDeadlineConn) owing() bool { return c.owed > 0 || c.flushed }

// applyDeadlines sets the earlier of pgconn's deadline and the answer's on
// the connection. c.mu must be held.
func (c *answerDeadlineConn) applyDeadlines() error {
	read, write := c.readDeadline, c.writeDeadline
	if c.owing() {
		answerBy := c.heardAt.Add(c.limit)
		read, write = earlier(read, answerBy), earlier(write, answerBy)
	}
	return errors.Join(c.Conn.SetReadDeadline(read), c.Conn.SetWriteDeadline(write))
}

// earlier returns the earlier of two deadlines, the zero time meaning none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// startupMessage is the kind scan reports for the first message a client
// sends, the only one without a type byte.
const startupMessage = 0

// messageStream follows the message boundaries of one direction of the
// protocol: a type byte (none for the client's first message) and a
// 4-byte length that counts itself, then the body.
type messageStream struct {
	started bool    // the first message's header has been read
	header  [5]byte // the header being read
	got     int     // bytes of header read
	skip    int     // bytes of the current body still to come
}

// scan reads b and calls onMessage with the type of each message whose
// header it completes.
func (s *messageStream) scan(b []byte, onMessage func(kind byte)) {
	for len(b) > 0 {
		if s.skip > 0 {
			n := min(s.skip, len(b))
			s.skip -= n
			b = b[n:]
			continue
		}
		headerSize := 5
		if !s.started {
			headerSize = 4 // the startup message: its length only
		}
		n := copy(s.header[s.got:headerSize], b)
		s.got += n
		b = b[n:]
		if s.got < headerSize {
			return
		}
		kind, length := byte(startupMessage), binary.BigEndian.Uint32(s.header[:4])
		if s.started {
			kind, length = s.header[0], binary.BigEndian.Uint32(s.header[1:5])
		}
		s.started, s.got = true, 0
		s.skip = max(int(length)-4, 0)
		onMessage(kind)
	}
}
