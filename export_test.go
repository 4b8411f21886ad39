package asyncreply

import (
	"context"
	"time"
)

// WithClock returns cfg with its clock replaced, so that tests can make
// operations expire without sleeping.
func WithClock(cfg Config, now func() time.Time) Config {
	cfg.now = now
	return cfg
}

// SweepNow runs one sweep of expired operations, as the background sweeper
// does every SweepInterval.
func (m *Middleware) SweepNow(ctx context.Context) (int, error) {
	return m.cfg.Backend.Sweep(ctx, m.cfg.now())
}
