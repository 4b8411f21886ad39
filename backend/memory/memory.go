// Package memory is the in-memory backend: operations live in a map and run
// on a bounded pool of goroutines in the same process.
//
// It is the default of asyncreply.New and the right choice for tests,
// development and a single process whose operations may be lost: everything
// it holds is gone when the process exits, and operations still running when
// it stops are failed with 503 rather than handed to another process. Use a
// durable backend (SQLite for one machine, PostgreSQL for several) when
// operations must survive a restart.
//
// What it holds is bounded: the operations waiting for a worker, in number
// and in the bytes of their recorded requests (Config.MaxQueued and
// Config.MaxQueuedBytes), so that a burst of submissions is refused with
// backend.ErrQueueFull (a 503 to the client) rather than grow the heap until
// the process dies.
//
// It delivers terminal transitions (backend.Notifier) from an in-process
// outbox, retrying failed attempts on timers; like the operations, the
// deliveries still pending when the process exits are lost.
package memory

import (
	"bytes"
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/internal/admission"
	"github.com/asyncreply/asyncreply/backend/internal/listing"
	"github.com/asyncreply/asyncreply/backend/internal/watch"
)

// Defaults of Config's fields.
const (
	// DefaultConcurrency is how many operations run at once by default.
	// Replayed handlers are usually waiting on I/O, so this is far more
	// than the number of cores.
	DefaultConcurrency = 100

	// DefaultMaxQueued is how many operations may wait for a worker by
	// default: a hundred times DefaultConcurrency, minutes of backlog for
	// handlers that take seconds, and a few megabytes of bookkeeping.
	DefaultMaxQueued = 10_000

	// DefaultMaxQueuedBytes bounds by default the recorded requests of the
	// operations waiting for a worker, the bulk of what they hold: what a
	// small machine spares without noticing, and room for a thousand
	// 64 KiB bodies.
	DefaultMaxQueuedBytes = 64 << 20
)

// Config configures a memory backend. The zero value is ready to use.
type Config struct {
	// Concurrency is the number of operations executed at once; further
	// operations wait in a queue, which MaxQueued and MaxQueuedBytes bound.
	// Defaults to DefaultConcurrency.
	Concurrency int

	// MaxQueued bounds the operations waiting for a worker: past it, Create
	// stores nothing and returns backend.ErrQueueFull. A negative value
	// sets no bound. Defaults to DefaultMaxQueued.
	MaxQueued int

	// MaxQueuedBytes bounds the bytes of the recorded requests of the
	// operations waiting for a worker: past it, Create stores nothing and
	// returns backend.ErrQueueFull. An operation larger than the bound is
	// accepted only when none waits. A negative value sets no bound.
	// Defaults to DefaultMaxQueuedBytes.
	MaxQueuedBytes int64

	// MaxQueuedPerOwner bounds the operations of one owner waiting for a
	// worker: past it, Create stores nothing and returns
	// backend.ErrOwnerQueueFull, while other owners are still accepted.
	// Operations without an owner count only towards MaxQueued. It is a
	// matter of fairness between principals, who may be free to mint new
	// owners (a cookie the server issues), not a guard of memory, which
	// MaxQueued and MaxQueuedBytes are. Defaults to 0: no bound per owner.
	MaxQueuedPerOwner int
}

// Backend is an in-memory backend.Backend. Create it with New.
type Backend struct {
	concurrency int
	limits      admission.Limits

	mu          sync.Mutex
	work        *sync.Cond // signalled when queue grows or stopping is set
	ops         map[string]*backend.Operation
	idempotency map[idempotencyKey]string
	expiries    expiryHeap
	queue       []string
	running     map[string]context.CancelCauseFunc
	waiting     waiting // the NotStarted operations, which limits bound
	stopping    bool

	watchers watch.Hub
	outbox   deliveries

	execute   backend.ExecuteFunc // set by Start, under mu: nil until then
	runCtx    context.Context     // parent of every execution; canceled to force a stop
	cancelRun context.CancelCauseFunc
	workers   sync.WaitGroup
}

type idempotencyKey struct{ owner, key string }

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Local   = (*Backend)(nil)
	_ backend.Lister  = (*Backend)(nil)

	_ backend.ChangeLister = (*Backend)(nil)
)

// New returns an empty memory backend. It executes nothing until Start.
func New(cfg Config) *Backend {
	b := &Backend{
		concurrency: cmp.Or(max(cfg.Concurrency, 0), DefaultConcurrency),
		limits: admission.Limits{
			Queued:         cmp.Or(cfg.MaxQueued, DefaultMaxQueued),
			QueuedBytes:    cmp.Or(cfg.MaxQueuedBytes, DefaultMaxQueuedBytes),
			QueuedPerOwner: cfg.MaxQueuedPerOwner,
		},
		ops:         make(map[string]*backend.Operation),
		idempotency: make(map[idempotencyKey]string),
		running:     make(map[string]context.CancelCauseFunc),
		waiting:     waiting{perOwner: make(map[string]int)},
	}
	b.work = sync.NewCond(&b.mu)
	b.outbox.work = sync.NewCond(&b.mu)
	return b
}

// Local implements backend.Local: the operations live in this process and
// are lost when it exits.
func (*Backend) Local() bool { return true }

// Create implements backend.Backend.
func (b *Backend) Create(ctx context.Context, op *backend.Operation) (*backend.Operation, bool, error) {
	if op.ID == "" {
		return nil, false, errors.New("memory: operation has no ID")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, exists := b.ops[op.ID]; exists {
		return nil, false, fmt.Errorf("memory: operation %q already exists", op.ID)
	}
	if op.IdempotencyKey != "" {
		key := idempotencyKey{op.Owner, op.IdempotencyKey}
		existing, ok := b.ops[b.idempotency[key]]
		if ok && !existing.Expired(op.CreatedAt) && existing.Status != backend.Canceled {
			return clone(existing), false, nil
		}
	}
	if err := b.limits.Admit(b.waiting.of(op.Owner), op.Owner, len(op.Request)); err != nil {
		return nil, false, fmt.Errorf("memory: create: %w", err)
	}
	if op.IdempotencyKey != "" {
		b.idempotency[idempotencyKey{op.Owner, op.IdempotencyKey}] = op.ID
	}
	stored := clone(op)
	// The backend owns what it stores: a caller reusing its buffers must not
	// change a stored operation, as it could not with a database.
	stored.Request = bytes.Clone(op.Request)
	stored.Fingerprint = bytes.Clone(op.Fingerprint)
	stored.Targets = slices.Clone(op.Targets)
	stored.Status = backend.NotStarted
	stored.Attempt = 0
	stored.Response, stored.Failure, stored.ExpiresAt, stored.CollectedAt = nil, nil, time.Time{}, time.Time{}
	if stored.UpdatedAt.IsZero() {
		stored.UpdatedAt = stored.CreatedAt
	}
	b.ops[op.ID] = stored
	b.waiting.add(stored)
	b.queue = append(b.queue, op.ID)
	b.work.Signal()
	return clone(stored), true, nil
}

// Get implements backend.Backend. The operation it returns shares its byte
// slices with the backend, so that polls do not copy stored responses; the
// contract forbids callers to modify them.
func (b *Backend) Get(ctx context.Context, id string) (*backend.Operation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	op, ok := b.ops[id]
	if !ok {
		return nil, backend.ErrNotFound
	}
	return clone(op), nil
}

// MarkRunning implements backend.Backend.
func (b *Backend) MarkRunning(ctx context.Context, id string, at time.Time) (*backend.Operation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	op, err := b.unfinished(id)
	if err != nil {
		return nil, err
	}
	b.setStatus(op, backend.Running)
	op.Attempt++
	op.UpdatedAt = at
	b.notify(id)
	running := clone(op)
	running.Request = bytes.Clone(op.Request) // the replay may consume it in place
	return running, nil
}

// SetProgress implements backend.Backend.
func (b *Backend) SetProgress(ctx context.Context, id string, progress backend.Progress, at time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	op, err := b.unfinished(id)
	if err != nil {
		return err
	}
	op.Progress = progress
	op.UpdatedAt = at
	b.notify(id)
	return nil
}

// Complete implements backend.Backend.
func (b *Backend) Complete(ctx context.Context, id string, outcome backend.Outcome) (bool, error) {
	if outcome.Status != backend.Succeeded && outcome.Status != backend.Failed {
		return false, fmt.Errorf("memory: cannot complete with status %q", outcome.Status)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	op, err := b.unfinished(id)
	if errors.Is(err, backend.ErrFinished) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	b.setStatus(op, outcome.Status)
	op.Response = bytes.Clone(outcome.Response)
	if outcome.Failure != nil {
		failure := *outcome.Failure
		op.Failure = &failure
	}
	b.finish(op, outcome.At)
	b.scheduleDeliveries(op)
	return true, nil
}

// Cancel implements backend.Backend.
func (b *Backend) Cancel(ctx context.Context, id string, at time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	op, ok := b.ops[id]
	if !ok {
		return backend.ErrNotFound
	}
	if op.Status == backend.Canceled {
		return nil
	}
	wasDone := op.Status.Done()
	b.setStatus(op, backend.Canceled)
	op.Response, op.Failure = nil, nil
	b.finish(op, at)
	if !wasDone {
		b.scheduleDeliveries(op)
	}
	if cancel, ok := b.running[id]; ok {
		cancel(backend.ErrCanceled)
	}
	return nil
}

// MarkCollected implements backend.Backend.
func (b *Backend) MarkCollected(ctx context.Context, id string, at time.Time) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	op, ok := b.ops[id]
	if !ok {
		return false, backend.ErrNotFound
	}
	if op.Status != backend.Succeeded || !op.CollectedAt.IsZero() {
		return false, nil
	}
	op.CollectedAt = at
	return true, nil
}

// Sweep implements backend.Backend.
func (b *Backend) Sweep(ctx context.Context, now time.Time) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	swept := 0
	for len(b.expiries) > 0 && !b.expiries[0].at.After(now) {
		id := heap.Pop(&b.expiries).(expiry).id
		op, ok := b.ops[id]
		if !ok || op.ExpiresAt.After(now) { // a stale entry: the operation was re-finished later
			continue
		}
		delete(b.ops, id)
		b.forgetDeliveries(id)
		key := idempotencyKey{op.Owner, op.IdempotencyKey}
		if op.IdempotencyKey != "" && b.idempotency[key] == id {
			delete(b.idempotency, key)
		}
		swept++
	}
	return swept, nil
}

// List implements backend.Lister. It visits every operation the backend
// holds, under the lock that Create and the workers take: the memory
// backend keeps no index, and holds few enough operations (those of one
// process, within their retention) for a scan to be cheap.
func (b *Backend) List(ctx context.Context, q backend.ListQuery) (backend.ListPage, error) {
	cursor, paging, err := listing.DecodeToken(q)
	if err != nil {
		return backend.ListPage{}, fmt.Errorf("memory: list: %w", err)
	}
	statuses := listing.Statuses(q)
	b.mu.Lock()
	var ops []*backend.Operation
	for _, op := range b.ops {
		if listable(op, q.Owner, q.AnyOwner, q.Now) && slices.Contains(statuses, op.Status) &&
			(q.CreatedAfter.IsZero() || op.CreatedAt.After(q.CreatedAfter)) &&
			(q.CreatedBefore.IsZero() || op.CreatedAt.Before(q.CreatedBefore)) &&
			(!paging || cursor.Before(op.CreatedAt, op.ID)) {
			ops = append(ops, op)
		}
	}
	// CreatedAt and ID never change, so the stored operations sort as
	// they are; only those on the page are copied, still under the lock.
	slices.SortFunc(ops, func(x, y *backend.Operation) int {
		return cmp.Or(y.CreatedAt.Compare(x.CreatedAt), strings.Compare(y.ID, x.ID))
	})
	ops = ops[:min(len(ops), listing.PageSize(q)+1)]
	for i, op := range ops {
		ops[i] = clone(op)
	}
	b.mu.Unlock()
	return listing.Page(q, ops), nil
}

// CountByStatus implements backend.Lister, visiting every operation as List
// does.
func (b *Backend) CountByStatus(ctx context.Context, q backend.CountQuery) (map[backend.Status]int, error) {
	counts := listing.Counts()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, op := range b.ops {
		if listable(op, q.Owner, q.AnyOwner, q.Now) {
			counts[op.Status]++
		}
	}
	return counts, nil
}

// Changes implements backend.ChangeLister, visiting every operation as List
// does: a feed's poller calls it a few times a second, and the operations
// of one process are few enough for that to be cheap.
func (b *Backend) Changes(ctx context.Context, q backend.ChangeQuery) ([]*backend.Operation, error) {
	after, err := listing.ChangeCursor(q)
	if err != nil {
		return nil, fmt.Errorf("memory: changes: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var ops []*backend.Operation
	for _, op := range b.ops {
		if (q.AnyOwner || op.Owner == q.Owner) && !op.Expired(q.Now) && after.Before(backend.CursorOf(op)) {
			ops = append(ops, op)
		}
	}
	slices.SortFunc(ops, func(x, y *backend.Operation) int {
		return cmp.Or(x.UpdatedAt.Compare(y.UpdatedAt), strings.Compare(x.ID, y.ID))
	})
	ops = ops[:min(len(ops), listing.ChangeLimit(q))]
	for i, op := range ops {
		ops[i] = clone(op)
		ops[i].Request, ops[i].Response = nil, nil
	}
	return ops, nil
}

// listable reports whether a listing of owner's (or anyOwner's) operations
// at now shows op.
func listable(op *backend.Operation, owner string, anyOwner bool, now time.Time) bool {
	return (anyOwner || op.Owner == owner) && op.Status != backend.Canceled && !op.Expired(now)
}

// Watch implements backend.Backend.
func (b *Backend) Watch(ctx context.Context, id string) (<-chan struct{}, func(), error) {
	changes, stop := b.watchers.Watch(id)
	return changes, stop, nil
}

// Start implements backend.Backend.
func (b *Backend) Start(ctx context.Context, execute backend.ExecuteFunc) error {
	if execute == nil {
		return errors.New("memory: Start needs an ExecuteFunc")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.execute != nil {
		return errors.New("memory: backend already started")
	}
	if b.stopping {
		return errors.New("memory: backend stopped")
	}
	b.execute = execute
	// Executions must not end with the context of whoever called Start.
	b.runCtx, b.cancelRun = context.WithCancelCause(context.WithoutCancel(ctx))
	b.workers.Add(b.concurrency)
	for range b.concurrency {
		go b.runWorker()
	}
	b.startDelivering()
	return nil
}

// Stop implements backend.Backend. It returns ctx's error when running
// executions had to be canceled.
func (b *Backend) Stop(ctx context.Context) error {
	b.mu.Lock()
	b.stopping = true
	started := b.execute != nil
	b.work.Broadcast()
	b.mu.Unlock()
	if !started {
		return nil
	}
	drained := make(chan struct{})
	go func() {
		b.workers.Wait()
		close(drained)
	}()
	var err error
	select {
	case <-drained:
		b.cancelRun(nil)
	case <-ctx.Done():
		b.cancelRun(backend.ErrShutdown)
		<-drained
		err = ctx.Err()
	}
	// Nothing will run what is still queued: say so to pollers rather than
	// leave the operations NotStarted for good.
	b.mu.Lock()
	for _, id := range b.queue {
		b.abandon(id)
	}
	b.queue = nil
	b.mu.Unlock()
	if deliveryErr := b.stopDelivering(ctx); err == nil {
		err = deliveryErr
	}
	return err
}

func (b *Backend) runWorker() {
	defer b.workers.Done()
	for {
		b.mu.Lock()
		for len(b.queue) == 0 && !b.stopping {
			b.work.Wait()
		}
		if b.stopping {
			b.mu.Unlock()
			return
		}
		id := b.queue[0]
		b.queue[0] = ""
		b.queue = b.queue[1:]
		if op, ok := b.ops[id]; !ok || op.Status.Done() {
			b.mu.Unlock()
			continue
		}
		ctx, cancel := context.WithCancelCause(b.runCtx)
		b.running[id] = cancel
		b.mu.Unlock()

		err := b.executeSafely(ctx, id)

		b.mu.Lock()
		delete(b.running, id)
		cancel(nil)
		if err != nil {
			b.abandon(id)
		}
		b.mu.Unlock()
	}
}

// executeSafely keeps a panicking ExecuteFunc from taking a worker, and the
// whole process, down with it.
func (b *Backend) executeSafely(ctx context.Context, id string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("memory: execute panicked: %v", p)
		}
	}()
	return b.execute(ctx, id)
}

// abandon fails an operation whose execution gave up: with nothing durable
// behind it, no other process can take it over. Called with b.mu held.
func (b *Backend) abandon(id string) {
	op, err := b.unfinished(id)
	if err != nil {
		return
	}
	b.setStatus(op, backend.Failed)
	op.Failure = &backend.Failure{
		Status: http.StatusServiceUnavailable,
		Title:  "Operation abandoned",
		Detail: "The server stopped executing the operation before it finished; the in-memory backend cannot hand it to another process.",
	}
	b.finish(op, time.Now())
	b.scheduleDeliveries(op)
}

// unfinished returns the stored operation if it exists and is not done.
// Called with b.mu held.
func (b *Backend) unfinished(id string) (*backend.Operation, error) {
	op, ok := b.ops[id]
	if !ok {
		return nil, backend.ErrNotFound
	}
	if op.Status.Done() {
		return nil, backend.ErrFinished
	}
	return op, nil
}

// setStatus moves op to status, and out of the operations waiting to run
// when it was one. Called with b.mu held.
func (b *Backend) setStatus(op *backend.Operation, status backend.Status) {
	if op.Status == backend.NotStarted && status != backend.NotStarted {
		b.waiting.remove(op)
	}
	op.Status = status
}

// finish records that op became done at at. Called with b.mu held.
func (b *Backend) finish(op *backend.Operation, at time.Time) {
	op.Request = nil // credentials are kept no longer than needed
	op.UpdatedAt = at
	op.ExpiresAt = at.Add(op.Retention)
	heap.Push(&b.expiries, expiry{at: op.ExpiresAt, id: op.ID})
	b.notify(op.ID)
}

// notify wakes the watchers of id. Called with b.mu held, so that watchers
// are woken in the order of changes.
func (b *Backend) notify(id string) { b.watchers.Notify(id) }

// waiting counts the operations waiting to run, as admission bounds them.
type waiting struct {
	count    int
	bytes    int64
	perOwner map[string]int // only owners with operations waiting, so that it never outgrows them
}

// of returns what waits, with owner's share.
func (w *waiting) of(owner string) admission.Queued {
	return admission.Queued{Count: w.count, Bytes: w.bytes, OwnerCount: w.perOwner[owner]}
}

// add counts op, whose Request is the backend's own copy. Its capacity is
// what it takes on the heap: a large allocation is rounded up to whole
// pages, an eighth more for a body just over 64 KiB.
func (w *waiting) add(op *backend.Operation) {
	w.count++
	w.bytes += int64(cap(op.Request))
	w.perOwner[op.Owner]++
}

func (w *waiting) remove(op *backend.Operation) {
	w.count--
	w.bytes -= int64(cap(op.Request))
	if w.perOwner[op.Owner]--; w.perOwner[op.Owner] <= 0 {
		delete(w.perOwner, op.Owner)
	}
}

func clone(op *backend.Operation) *backend.Operation {
	c := *op
	return &c
}

// expiryHeap orders done operations by expiry so that a sweep touches only
// what it removes, however many operations are retained.
type expiryHeap []expiry

type expiry struct {
	at time.Time
	id string
}

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	last := old[len(old)-1]
	*h = old[:len(old)-1]
	return last
}
