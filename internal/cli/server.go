package cli

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Defaults of the flags bounding how long a client may hold a connection
// of a listener the command starts without doing its part.
const (
	// DefaultReadTimeout bounds the sending of a request, body included: a
	// minute carries 10 MiB, an asynchronous request's largest by default,
	// at 1.4 Mbit/s, while a client trickling a byte at a time is cut off.
	DefaultReadTimeout = time.Minute

	// DefaultIdleTimeout closes a kept-alive connection that has sent no
	// new request for this long. Behind a load balancer it must be longer
	// than the balancer's own (60 s for AWS's), which would otherwise send
	// a request down a connection the gateway is closing.
	DefaultIdleTimeout = 2 * time.Minute
)

// readHeaderTimeout bounds the sending of a request's headers.
const readHeaderTimeout = 10 * time.Second

// serverTimeouts are the --read-timeout and --idle-timeout flags.
type serverTimeouts struct {
	read time.Duration // of a whole request, from its first byte; 0: none
	idle time.Duration // between a connection's requests; 0: none
}

func (t *serverTimeouts) addFlags(c *command) {
	c.DurationVar(&t.read, "read-timeout", DefaultReadTimeout, "longest a client may take to send a request, body included (its headers get at most 10s); then its connection is closed. Raise it for large uploads over slow links; 0: no limit")
	c.DurationVar(&t.idle, "idle-timeout", DefaultIdleTimeout, "how long a kept-alive connection may wait for its next request before it is closed; behind a load balancer, longer than the balancer's own; 0: no limit")
}

func (t serverTimeouts) check() error {
	switch {
	case t.read < 0:
		return fmt.Errorf("--read-timeout must not be negative, got %s", t.read)
	case t.idle < 0:
		return fmt.Errorf("--idle-timeout must not be negative, got %s", t.idle)
	}
	return nil
}

// newServer returns the server of every listener the command starts, so
// that none lets a slow or idle client hold a connection without bound: a
// request's headers within readHeaderTimeout, the whole request within
// t.read, the next request within t.idle.
//
// ReadTimeout's deadline is the connection's, but net/http lifts it as soon
// as the body has been read, to watch for the client going away: a
// long-poll, an event stream, a WebSocket or a slow upstream's answer goes
// on for as long as it takes.
func newServer(h http.Handler, t serverTimeouts, logger *slog.Logger) *http.Server {
	idle := t.idle
	if idle == 0 {
		idle = -1 // none; zero would mean ReadTimeout's
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       t.read,
		IdleTimeout:       idle,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}
