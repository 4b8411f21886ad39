package riverjob

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/asyncreply/asyncreply/backend"
)

// DeliveryQueue is the River queue deliveries run in, apart from
// operations, so that slow targets never take the workers operations
// need.
const DeliveryQueue = "asyncreply_delivery"

// DefaultDeliveryConcurrency is how many deliveries a process attempts at
// once.
const DefaultDeliveryConcurrency = 16

// DeliveryKind is the River kind of a delivery job, which a backend's
// rescue of dead processes' jobs selects by.
const DeliveryKind = "asyncreply_delivery"

// DeliveryArgs is the River job of one delivery: one operation's terminal
// transition to one of its targets. What the attempts bring is kept in the
// backend's delivery row, not in the job.
type DeliveryArgs struct {
	OperationID string `json:"operation_id"`
	Target      string `json:"target"`
}

// Kind implements river.JobArgs.
func (DeliveryArgs) Kind() string { return DeliveryKind }

// deliveryMaxAttempts bounds the job's attempts that fail to record their
// outcome (the store unreachable); a failed delivery is not one of them:
// its retry is a snooze, which River does not count, and the DeliverFunc
// decides when to give up.
const deliveryMaxAttempts = 25

// InsertOpts implements river.JobArgsWithInsertOpts.
func (DeliveryArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: DeliveryQueue, MaxAttempts: deliveryMaxAttempts}
}

// DeliveryStore is how a DeliveryWorker reads and writes a backend's
// delivery rows.
type DeliveryStore struct {
	// Load returns the delivery, or nil when it is gone (its operation
	// swept).
	Load func(ctx context.Context, operationID, target string) (*backend.Delivery, error)
	// Record stores the delivery as an attempt left it.
	Record func(ctx context.Context, d *backend.Delivery) error
}

// DeliveryWorker makes deliveries for River. Create it with
// NewDeliveryWorker, give it to NewClient in ClientConfig.Deliveries, and
// call its DeliverWith before the client starts.
type DeliveryWorker struct {
	river.WorkerDefaults[DeliveryArgs]

	store   DeliveryStore
	mu      sync.RWMutex
	deliver backend.DeliverFunc
}

// NewDeliveryWorker returns a worker on store.
func NewDeliveryWorker(store DeliveryStore) *DeliveryWorker {
	return &DeliveryWorker{store: store}
}

// DeliverWith sets the function that makes attempts and adds
// DeliveryQueue to queues, so that the client starts fetching deliveries;
// a backend's Notifier.DeliverWith.
func (w *DeliveryWorker) DeliverWith(deliver backend.DeliverFunc, queues *river.QueueBundle) error {
	if deliver == nil {
		return errors.New("DeliverWith needs a DeliverFunc")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.deliver != nil {
		return errors.New("DeliverWith called twice")
	}
	w.deliver = deliver
	return queues.Add(DeliveryQueue, river.QueueConfig{MaxWorkers: DefaultDeliveryConcurrency})
}

// Work implements river.Worker: one attempt, recorded, and a snooze until
// the next when the DeliverFunc asks for one.
func (w *DeliveryWorker) Work(ctx context.Context, job *river.Job[DeliveryArgs]) error {
	w.mu.RLock()
	deliver := w.deliver
	w.mu.RUnlock()
	if deliver == nil { // not reached: the queue is added with the DeliverFunc
		return river.JobSnooze(time.Minute)
	}
	d, err := w.store.Load(ctx, job.Args.OperationID, job.Args.Target)
	if err != nil {
		return err
	}
	if d == nil || !d.DeliveredAt.IsZero() || !d.GaveUpAt.IsZero() {
		return nil // swept, or finished by an earlier job (a rescued one)
	}
	result := deliver(ctx, *d)
	// The stores keep microseconds.
	result.At = cmp.Or(result.At, time.Now()).Truncate(time.Microsecond)
	retry := d.Apply(result)
	if err := w.store.Record(context.WithoutCancel(ctx), d); err != nil {
		return err
	}
	if retry {
		return river.JobSnooze(result.RetryAfter)
	}
	return nil
}
