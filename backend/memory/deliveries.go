package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// DefaultDeliveryConcurrency is how many deliveries are attempted at once
// by default: targets answer within their timeout, but a slow one must not
// hold up the others.
const DefaultDeliveryConcurrency = 16

var _ backend.Notifier = (*Backend)(nil)

// deliveries are the in-process outbox: the deliveries of each done
// operation with targets, and those due for an attempt. Like the
// operations, they are lost when the process exits: a delivery pending
// then, waiting for a retry or for Start, is never made.
type deliveries struct {
	deliver  backend.DeliverFunc
	records  map[string][]*backend.Delivery // by operation ID, in the order of its Targets
	due      []*backend.Delivery
	work     *sync.Cond // on Backend.mu: signalled when due grows or stopped is set
	retries  map[*time.Timer]struct{}
	workers  chan struct{} // closed once every delivery worker returned
	stopped  bool
	cancelIO context.CancelCauseFunc
}

// DeliverWith implements backend.Notifier.
func (b *Backend) DeliverWith(deliver backend.DeliverFunc) error {
	if deliver == nil {
		return errors.New("memory: DeliverWith needs a DeliverFunc")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.execute != nil {
		return errors.New("memory: DeliverWith must be called before Start")
	}
	if b.outbox.deliver != nil {
		return errors.New("memory: DeliverWith called twice")
	}
	b.outbox.deliver = deliver
	return nil
}

// Deliveries implements backend.Notifier.
func (b *Backend) Deliveries(ctx context.Context, id string) ([]backend.Delivery, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.ops[id]; !ok {
		return nil, backend.ErrNotFound
	}
	var ds []backend.Delivery
	for _, d := range b.outbox.records[id] {
		ds = append(ds, *d)
	}
	return ds, nil
}

// scheduleDeliveries records a delivery per target of op, which has just
// become done, and makes them due. Called with b.mu held.
func (b *Backend) scheduleDeliveries(op *backend.Operation) {
	if len(op.Targets) == 0 {
		return
	}
	if b.outbox.records == nil {
		b.outbox.records = make(map[string][]*backend.Delivery)
	}
	for _, target := range op.Targets {
		d := &backend.Delivery{OperationID: op.ID, Target: target, Status: op.Status}
		b.outbox.records[op.ID] = append(b.outbox.records[op.ID], d)
		b.makeDue(d)
	}
}

// makeDue queues d for an attempt. Called with b.mu held.
func (b *Backend) makeDue(d *backend.Delivery) {
	if b.outbox.stopped {
		return
	}
	b.outbox.due = append(b.outbox.due, d)
	b.outbox.work.Signal()
}

// startDelivering starts the delivery workers, if a DeliverFunc was set.
// Called with b.mu held, from Start.
func (b *Backend) startDelivering() {
	if b.outbox.deliver == nil {
		return
	}
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(b.runCtx))
	b.outbox.cancelIO = cancel
	b.outbox.workers = make(chan struct{})
	done := make(chan struct{}, DefaultDeliveryConcurrency)
	for range DefaultDeliveryConcurrency {
		go func() {
			defer func() { done <- struct{}{} }()
			b.runDeliveries(ctx)
		}()
	}
	go func() {
		for range DefaultDeliveryConcurrency {
			<-done
		}
		close(b.outbox.workers)
	}()
}

// runDeliveries makes due deliveries until the outbox stops.
func (b *Backend) runDeliveries(ctx context.Context) {
	for {
		b.mu.Lock()
		for len(b.outbox.due) == 0 && !b.outbox.stopped {
			b.outbox.work.Wait()
		}
		if b.outbox.stopped {
			b.mu.Unlock()
			return
		}
		d := b.outbox.due[0]
		b.outbox.due[0] = nil
		b.outbox.due = b.outbox.due[1:]
		before := *d
		b.mu.Unlock()

		result := b.deliverSafely(ctx, before)

		b.mu.Lock()
		b.record(d, result)
		b.mu.Unlock()
	}
}

// record stores an attempt's result in d, and schedules the next attempt
// when it asks for one. Called with b.mu held.
func (b *Backend) record(d *backend.Delivery, result backend.DeliveryResult) {
	if !d.Apply(result) || b.outbox.stopped {
		return
	}
	var timer *time.Timer
	timer = time.AfterFunc(result.RetryAfter, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, pending := b.outbox.retries[timer]; pending {
			delete(b.outbox.retries, timer)
			b.makeDue(d)
		}
	})
	if b.outbox.retries == nil {
		b.outbox.retries = make(map[*time.Timer]struct{})
	}
	b.outbox.retries[timer] = struct{}{}
}

// deliverSafely keeps a panicking DeliverFunc from taking the process down.
func (b *Backend) deliverSafely(ctx context.Context, d backend.Delivery) (result backend.DeliveryResult) {
	defer func() {
		if p := recover(); p != nil {
			result = backend.DeliveryResult{Err: fmt.Errorf("memory: deliver panicked: %v", p), At: time.Now()}
		}
	}()
	return b.outbox.deliver(ctx, d)
}

// stopDelivering stops the delivery workers once their attempts in flight
// have ended, canceling those still going when ctx ends; retries not due
// yet are dropped.
func (b *Backend) stopDelivering(ctx context.Context) error {
	b.mu.Lock()
	b.outbox.stopped = true
	for timer := range b.outbox.retries {
		timer.Stop()
	}
	clear(b.outbox.retries)
	b.outbox.due = nil
	b.outbox.work.Broadcast()
	workers := b.outbox.workers
	b.mu.Unlock()
	if workers == nil {
		return nil
	}
	select {
	case <-workers:
		b.outbox.cancelIO(nil)
		return nil
	case <-ctx.Done():
		b.outbox.cancelIO(backend.ErrShutdown)
		<-workers
		return ctx.Err()
	}
}

// forgetDeliveries drops the deliveries of a swept operation. Called with
// b.mu held.
func (b *Backend) forgetDeliveries(id string) {
	for _, d := range b.outbox.records[id] {
		b.outbox.due = slices.DeleteFunc(b.outbox.due, func(due *backend.Delivery) bool { return due == d })
	}
	delete(b.outbox.records, id)
}
