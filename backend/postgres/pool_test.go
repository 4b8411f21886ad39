package postgres_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/internal/testdb"
)

// A URL's own timeouts win over ConfigurePool's defaults, whether given as
// parameters or in options; the others get the defaults, and the server
// applies them.
func TestConfigurePool(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(testdb.URL())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("connect_timeout", "7")
	q.Set("lock_timeout", "2s")
	q.Set("pool_ping_timeout", "4s")
	// pgx reads a + in the query as itself, not as a space: %20 it is.
	u.RawQuery = q.Encode() + "&options=" + strings.ReplaceAll(url.QueryEscape("-c idle_in_transaction_session_timeout=1min"), "+", "%20")
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		t.Fatal(err)
	}
	postgres.ConfigurePool(cfg)
	if got := cfg.ConnConfig.ConnectTimeout; got != 7*time.Second {
		t.Errorf("ConnectTimeout = %v, want the URL's 7s", got)
	}
	if got := cfg.PingTimeout; got != 4*time.Second {
		t.Errorf("PingTimeout = %v, want the URL's 4s", got)
	}
	cfg.MaxConns = 1
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for setting, want := range map[string]string{
		"statement_timeout":                   "10s",
		"lock_timeout":                        "2s",
		"idle_in_transaction_session_timeout": "1min",
	} {
		var got string
		if err := pool.QueryRow(ctx, "SHOW "+setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %s, want %s", setting, got, want)
		}
	}

	defaults, err := pgxpool.ParseConfig(testdb.URL())
	if err != nil {
		t.Fatal(err)
	}
	postgres.ConfigurePool(defaults)
	if got := defaults.ConnConfig.ConnectTimeout; got != postgres.DefaultConnectTimeout {
		t.Errorf("ConnectTimeout = %v, want DefaultConnectTimeout", got)
	}
	if got := defaults.PingTimeout; got != postgres.DefaultPingTimeout {
		t.Errorf("PingTimeout = %v, want DefaultPingTimeout", got)
	}
}

// A query on a connection whose server stops answering fails once the
// statement timeout and its grace have passed, even when its context never
// ends, and the pool drops the connection; a connection that owes nothing,
// waiting for notifications, is not cut however long it is quiet.
func TestConfigurePoolDropsHungConnections(t *testing.T) {
	t.Parallel()
	target, err := url.Parse(testdb.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := newFaultProxy(t, target.Host)
	viaProxy := *target
	viaProxy.Host = proxy.ln.Addr().String()
	q := viaProxy.Query()
	q.Set("statement_timeout", "1s") // connections owing an answer are cut after 1 s + 3 s
	viaProxy.RawQuery = q.Encode()
	cfg, err := pgxpool.ParseConfig(viaProxy.String())
	if err != nil {
		t.Fatal(err)
	}
	postgres.ConfigurePool(cfg)
	cfg.MaxConns = 2
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	listener, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Release()
	if _, err := listener.Exec(ctx, "LISTEN quiet"); err != nil {
		t.Fatal(err)
	}
	quietFor := 5 * time.Second // longer than a connection may owe an answer
	waitCtx, cancelWait := context.WithTimeout(ctx, quietFor)
	_, err = listener.Conn().WaitForNotification(waitCtx)
	cancelWait()
	if !errors.Is(err, context.DeadlineExceeded) && !pgconnTimeout(err) {
		t.Fatalf("waiting for notifications for %v: %v, want the wait's own deadline", quietFor, err)
	}
	if err := listener.Ping(ctx); err != nil {
		t.Fatalf("the listening connection, quiet for %v, was cut: %v", quietFor, err)
	}

	hung, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	proxy.setFault(blackHole)
	failed := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := hung.Exec(context.Background(), "SELECT 1") // as River fetches: no deadline
		failed <- err
	}()
	select {
	case err := <-failed:
		if err == nil {
			t.Fatal("a query answered through a black hole")
		}
		if elapsed := time.Since(start); elapsed < time.Second || elapsed > 10*time.Second {
			t.Errorf("the query on a hung connection failed after %v, want after about 4s", elapsed)
		}
		t.Logf("the query on a hung connection failed after %v: %v", time.Since(start).Round(10*time.Millisecond), err)
	case <-time.After(20 * time.Second):
		proxy.setFault(cut) // unblocks the query, for the test to end
		<-failed
		hung.Release()
		t.Fatal("a query on a connection whose server stopped answering was still waiting after 20s")
	}
	if !hung.Conn().IsClosed() {
		t.Error("the hung connection is still open: the pool would hand it out again")
	}
	hung.Release()

	proxy.setFault(noFault)
	var one int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Errorf("query after the database answers again: %v", err)
	}
}

// pgconnTimeout reports whether err is pgconn's report of a context's
// deadline.
func pgconnTimeout(err error) bool {
	var timeout interface{ Timeout() bool }
	return errors.As(err, &timeout) && timeout.Timeout()
}
