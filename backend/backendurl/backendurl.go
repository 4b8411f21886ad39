// Package backendurl opens a backend from a URL, the one way the library's
// users, the gateway and the worker command name where operations live:
//
//	memory:                          in this process; lost on restart
//	sqlite://PATH                    one file on this machine (sqlite:///abs/path or sqlite://rel/path)
//	postgres://USER@HOST/DB?schema=S several machines; any libpq URL, plus an optional schema
//
// A postgres URL's pool is prepared by postgres.ConfigurePool, whose
// defaults make a database that stops answering give 503s at once, and
// service resume within seconds of its return. The URL's own
// connect_timeout, statement_timeout, lock_timeout,
// idle_in_transaction_session_timeout and pool_ping_timeout win.
package backendurl

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/backend/postgres"
	"github.com/asyncreply/asyncreply/backend/sqlite"
)

// Options are the settings every backend takes, besides its URL.
type Options struct {
	// Concurrency is how many operations this process executes at once.
	// Defaults to each backend's own default.
	Concurrency int
	// Logger receives the backend's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// MaxQueued bounds the operations waiting to run: past it, Create
	// refuses with backend.ErrQueueFull. A negative value sets no bound,
	// for memory: on their bytes either. Defaults to each backend's own:
	// memory.DefaultMaxQueued, and memory.DefaultMaxQueuedBytes on their
	// bytes, for memory:; no bound for SQLite and PostgreSQL, whose queue
	// is on disk.
	MaxQueued int
	// MaxQueuedPerOwner bounds the operations of one owner waiting to run:
	// past it, Create refuses with backend.ErrOwnerQueueFull. Defaults to
	// 0: no bound per owner, on every backend.
	MaxQueuedPerOwner int
	// Heartbeat is how often a process executing operations on a durable
	// backend records that it is alive: the operations of a process silent
	// for six heartbeats are run again by the others at their next sweep.
	// Each process writes once per heartbeat, so a shorter one costs writes
	// (on PostgreSQL, one upsert per process per heartbeat) and recovers
	// sooner (about six heartbeats plus the sweep interval after a death).
	// On SQLite a process that died on the same machine is known dead at
	// once, whatever the heartbeat. Every process sharing a backend should
	// use the same. Defaults to DefaultHeartbeat.
	Heartbeat time.Duration
}

// DefaultHeartbeat is the durable backends' default Options.Heartbeat.
const DefaultHeartbeat = postgres.DefaultHeartbeatInterval

// Open returns the backend rawURL names, ready to be given to
// asyncreply.Config.Backend (which then starts and stops it). Durable
// backends are migrated on open. The error says what is wrong with the URL.
func Open(ctx context.Context, rawURL string, opts Options) (backend.Backend, error) {
	scheme, _, found := strings.Cut(rawURL, ":")
	if !found {
		return nil, fmt.Errorf("backend URL %q has no scheme: use memory:, sqlite://PATH or postgres://…", rawURL)
	}
	switch strings.ToLower(scheme) {
	case "memory":
		cfg := memory.Config{Concurrency: opts.Concurrency, MaxQueued: opts.MaxQueued, MaxQueuedPerOwner: opts.MaxQueuedPerOwner}
		if opts.MaxQueued < 0 {
			cfg.MaxQueuedBytes = -1
		}
		return memory.New(cfg), nil
	case "sqlite":
		path, ok := strings.CutPrefix(rawURL[len(scheme):], "://")
		if !ok || path == "" {
			return nil, fmt.Errorf("backend URL %q: want sqlite://PATH, e.g. sqlite://./asyncreply.db or sqlite:///var/lib/asyncreply.db", rawURL)
		}
		return sqlite.New(ctx, sqlite.Config{
			Path: path, Concurrency: opts.Concurrency, HeartbeatInterval: opts.Heartbeat, Logger: opts.Logger,
			MaxQueued: opts.MaxQueued, MaxQueuedPerOwner: opts.MaxQueuedPerOwner,
		})
	case "postgres", "postgresql":
		return openPostgres(ctx, rawURL, opts)
	default:
		return nil, fmt.Errorf("backend URL %q: unknown scheme %q: use memory:, sqlite://PATH or postgres://…", rawURL, scheme)
	}
}

// openPostgres opens a pool of its own, which the backend closes when it
// stops.
func openPostgres(ctx context.Context, rawURL string, opts Options) (backend.Backend, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("backend URL: %w", err)
	}
	// schema is ours; PostgreSQL would take it for a run-time parameter.
	query := u.Query()
	schema := query.Get("schema")
	query.Del("schema")
	u.RawQuery = query.Encode()
	poolConfig, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		return nil, fmt.Errorf("backend URL: %w", err)
	}
	postgres.ConfigurePool(poolConfig)
	pool, err := pgxpool.NewWithConfig(ctx, poolConfig)
	if err != nil {
		return nil, fmt.Errorf("backend URL: %w", err)
	}
	b, err := postgres.New(ctx, postgres.Config{
		Pool: pool, Schema: schema, Concurrency: opts.Concurrency, HeartbeatInterval: opts.Heartbeat, Logger: opts.Logger,
		MaxQueued: opts.MaxQueued, MaxQueuedPerOwner: opts.MaxQueuedPerOwner,
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &ownedPool{Backend: b, pool: pool}, nil
}

// ownedPool is a PostgreSQL backend that closes its pool when it stops.
type ownedPool struct {
	*postgres.Backend
	pool *pgxpool.Pool
}

func (b *ownedPool) Stop(ctx context.Context) error {
	err := b.Backend.Stop(ctx)
	b.pool.Close()
	return err
}
