// Package groupcommit shares one transaction among the Creates that arrive
// together. A commit costs a round trip and a flush to disk; callers that
// arrive while one commits are committed together in the next, and a lone
// caller does not wait for company.
package groupcommit

import (
	"context"
	"sync"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// MaxBatch bounds how many operations share one transaction.
const MaxBatch = 256

// Request is one operation waiting to be created; Ctx is its caller's.
type Request struct {
	Ctx context.Context
	Op  *backend.Operation
}

// Result is what Create returns for one Request.
type Result struct {
	Stored  *backend.Operation
	Created bool
	Err     error
}

// Funcs are a backend's ways of creating operations.
type Funcs struct {
	// Together creates every request of a batch in one transaction and
	// returns a result for each, or an error if the transaction failed (then
	// nothing was created). It skips requests whose Ctx has ended, giving
	// them an error result.
	Together func(ctx context.Context, batch []Request) ([]Result, error)
	// Alone creates one request in a transaction of its own: after a
	// batch's transaction failed, so that one bad operation fails only
	// itself.
	Alone func(req Request) Result
}

// Committer runs the group commits of one backend, in a goroutine of its
// own until Stop.
type Committer struct {
	funcs    Funcs
	requests chan *pending
	stop     chan struct{}
	done     sync.WaitGroup
}

type pending struct {
	Request
	result chan Result
}

// Start returns a running Committer.
func Start(funcs Funcs) *Committer {
	c := &Committer{funcs: funcs, requests: make(chan *pending), stop: make(chan struct{})}
	c.done.Add(1)
	go c.run()
	return c
}

// Create hands op to the next group commit and waits for its result, or
// for ctx to end. When ctx ends first the operation may still be created;
// the caller, told it was not, acknowledges nothing, which is the safe side.
func (c *Committer) Create(ctx context.Context, op *backend.Operation) Result {
	p := &pending{Request: Request{Ctx: ctx, Op: op}, result: make(chan Result, 1)}
	select {
	case c.requests <- p:
	case <-ctx.Done():
		return Result{Err: ctx.Err()}
	}
	select {
	case r := <-p.result:
		return r
	case <-ctx.Done():
		return Result{Err: ctx.Err()}
	}
}

// Stop ends the Committer once the batch in progress, if any, is done.
// Create must not be called after Stop.
func (c *Committer) Stop() {
	close(c.stop)
	c.done.Wait()
}

func (c *Committer) run() {
	defer c.done.Done()
	for {
		var batch []*pending
		select {
		case p := <-c.requests:
			batch = append(batch, p)
		case <-c.stop:
			return
		}
	gather:
		for len(batch) < MaxBatch {
			select {
			case p := <-c.requests:
				batch = append(batch, p)
			default:
				break gather
			}
		}
		c.commit(batch)
	}
}

// commitTimeout bounds one batch's transaction, whatever its callers' contexts.
const commitTimeout = 15 * time.Second

func (c *Committer) commit(batch []*pending) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	requests := make([]Request, len(batch))
	for i, p := range batch {
		requests[i] = p.Request
	}
	results, err := c.funcs.Together(ctx, requests)
	for i, p := range batch {
		switch {
		case err == nil:
			p.result <- results[i]
		case len(batch) == 1:
			p.result <- Result{Err: err}
		default:
			p.result <- c.funcs.Alone(p.Request)
		}
	}
}
