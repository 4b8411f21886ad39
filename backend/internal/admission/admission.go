// Package admission decides, for every backend, whether Create may add one
// more operation to those waiting to run (NotStarted), given bounds on how
// many wait in total and per owner, and on the bytes their recorded
// requests hold. A refusal is one of backend's sentinels, ErrQueueFull or
// ErrOwnerQueueFull, wrapped with the bound that was reached.
package admission

import (
	"errors"
	"fmt"

	"github.com/asyncreply/asyncreply/backend"
)

// Limits bound the operations waiting to run. A zero or negative field sets
// no bound.
type Limits struct {
	// Queued bounds the operations waiting to run, in total.
	Queued int
	// QueuedPerOwner bounds those of one owner. Operations without an owner
	// count only towards Queued: they share no principal to be fair to.
	QueuedPerOwner int
	// QueuedBytes bounds the bytes of their recorded requests, in total.
	QueuedBytes int64
}

// Bounded reports whether any bound is set, so that a backend without one
// spends nothing on counting.
func (l Limits) Bounded() bool {
	return l.Queued > 0 || l.QueuedPerOwner > 0 || l.QueuedBytes > 0
}

// Queued is what waits to run when an operation asks to join: in total, and
// of that operation's owner.
type Queued struct {
	Count      int
	Bytes      int64
	OwnerCount int
}

// Admit returns nil when one more operation of owner, whose recorded request
// is size bytes, may join what q counts, and the refusal otherwise. The owner
// is told first that it is over its own bound: slowing down is up to it. An
// operation larger than QueuedBytes is admitted when nothing waits, or it
// could never be.
func (l Limits) Admit(q Queued, owner string, size int) error {
	switch {
	case owner != "" && l.QueuedPerOwner > 0 && q.OwnerCount >= l.QueuedPerOwner:
		return fmt.Errorf("%d operations of this owner waiting to run, the most allowed: %w", q.OwnerCount, backend.ErrOwnerQueueFull)
	case l.Queued > 0 && q.Count >= l.Queued:
		return fmt.Errorf("%d operations waiting to run, the most allowed: %w", q.Count, backend.ErrQueueFull)
	case l.QueuedBytes > 0 && q.Bytes > 0 && q.Bytes+int64(size) > l.QueuedBytes:
		return fmt.Errorf("%d bytes of operations waiting to run, and %d more would pass the %d allowed: %w",
			q.Bytes, size, l.QueuedBytes, backend.ErrQueueFull)
	}
	return nil
}

// Owners returns the distinct owners of ops that a per-owner bound applies
// to, those whose counts a Tally must start from.
func (l Limits) Owners(ops []*backend.Operation) []string {
	if l.QueuedPerOwner <= 0 {
		return nil
	}
	seen := make(map[string]bool)
	var owners []string
	for _, op := range ops {
		if op.Owner != "" && !seen[op.Owner] {
			seen[op.Owner] = true
			owners = append(owners, op.Owner)
		}
	}
	return owners
}

// Refused reports whether err is a refusal of admission rather than a
// failure: a batch whose operation is refused goes on with the others.
func Refused(err error) bool {
	return errors.Is(err, backend.ErrQueueFull) || errors.Is(err, backend.ErrOwnerQueueFull)
}

// Tally counts what waits to run during one transaction of a durable
// backend that creates operations: it starts from the counts the store
// held once the transaction kept other Creates out (SQLite's write lock,
// PostgreSQL's admission lock), and adds every operation it admits, so
// that each operation of a batch is judged with its batch-mates before
// it. It bounds counts only, not bytes: a durable backend's queue is on
// disk.
type Tally struct {
	limits Limits
	total  int
	owners map[string]int
}

// NewTally returns a tally starting from total operations waiting and, for
// each owner the transaction creates for, that owner's.
func NewTally(limits Limits, total int, owners map[string]int) *Tally {
	if owners == nil {
		owners = make(map[string]int)
	}
	return &Tally{limits: limits, total: total, owners: owners}
}

// Admit counts one more operation of owner, or returns the refusal. A nil
// Tally, that of a backend without bounds, admits everything.
func (t *Tally) Admit(owner string) error {
	if t == nil {
		return nil
	}
	if err := t.limits.Admit(Queued{Count: t.total, OwnerCount: t.owners[owner]}, owner, 0); err != nil {
		return err
	}
	t.total++
	if owner != "" {
		t.owners[owner]++
	}
	return nil
}
