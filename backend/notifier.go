package backend

import (
	"context"
	"time"
)

// Notifier is an optional interface of a Backend that delivers every
// operation's terminal transition to the Targets stored with it: a
// transactional outbox. The transition that makes an operation done —
// Complete, a Cancel of an operation not done yet, and the backend's own
// failing of an abandoned one — records one Delivery per target and
// schedules it in the same atomic step, so that no crash between the
// transition and the delivery loses it. A Cancel of an operation already
// done schedules nothing: its transition was delivered already.
//
// Deliveries are at least once: a target may see one transition twice,
// and a DeliverFunc that reports failure is called again after the
// DeliveryResult's RetryAfter. They run in the processes that execute
// operations, from Start to Stop, in workers of their own, so that slow
// targets never hold up executions.
//
// Without Notifier, a backend keeps working, and nothing is delivered.
// A wrapper that embeds the Backend interface hides it, and should
// forward it.
type Notifier interface {
	// DeliverWith sets the function that makes each delivery attempt. It
	// must be called before Start, at most once; deliveries wait for
	// Start, and none runs after Stop. A process that never calls it
	// makes no delivery, and leaves them to the processes that do.
	DeliverWith(deliver DeliverFunc) error

	// Deliveries returns the operation's deliveries, one per target in
	// the order of its Targets once it is done, none before. It returns
	// ErrNotFound when the operation does not exist.
	Deliveries(ctx context.Context, id string) ([]Delivery, error)
}

// Delivery is one target's delivery of one operation's terminal
// transition, and what its attempts have brought so far.
type Delivery struct {
	OperationID string
	// Target is one of the operation's Targets.
	Target string
	// Status is the terminal status delivered: Succeeded, Failed or
	// Canceled.
	Status Status
	// Attempts counts the attempts made, 0 before the first.
	Attempts int
	// LastStatus is what the last attempt's target answered (an HTTP
	// status for a webhook), 0 when none or before the first attempt.
	LastStatus int
	// LastError says why the last attempt failed, "" when it did not.
	LastError string
	// LastAttemptAt is when the last attempt ended, zero before the first.
	LastAttemptAt time.Time
	// DeliveredAt is when an attempt succeeded, zero until then; no
	// attempt follows.
	DeliveredAt time.Time
	// GaveUpAt is when the deliverer gave up after a failed attempt, zero
	// unless it did; no attempt follows.
	GaveUpAt time.Time
}

// DeliverFunc makes one attempt at a delivery, d as it stands before the
// attempt. The backend records the result and calls it again for d after
// RetryAfter when the attempt failed and asked for a retry.
type DeliverFunc func(ctx context.Context, d Delivery) DeliveryResult

// DeliveryResult is the outcome of one delivery attempt.
type DeliveryResult struct {
	// Err is nil when the target acknowledged the delivery.
	Err error
	// Status is what the target answered, 0 when none.
	Status int
	// RetryAfter, when Err is set, is how long to wait before the next
	// attempt; zero or negative gives up.
	RetryAfter time.Duration
	// At is when the attempt ended.
	At time.Time
}

// Apply records an attempt's result in d (a zero At taken as now) and
// reports whether another attempt is due after result.RetryAfter.
func (d *Delivery) Apply(result DeliveryResult) (retry bool) {
	at := result.At
	if at.IsZero() {
		at = time.Now()
	}
	d.Attempts++
	d.LastStatus = result.Status
	d.LastAttemptAt = at
	switch {
	case result.Err == nil:
		d.LastError = ""
		d.DeliveredAt = at
		return false
	case result.RetryAfter > 0:
		d.LastError = result.Err.Error()
		return true
	default:
		d.LastError = result.Err.Error()
		d.GaveUpAt = at
		return false
	}
}
