// Package riverjob holds what the River-based backends share: the job that
// executes an operation, the worker that maps River's cancellations onto the
// backend contract, and the stop sequence.
package riverjob

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"

	"github.com/asyncreply/asyncreply/backend"
)

// Queue is the River queue operations run in, so that they share a River
// database with an application's own jobs without taking its workers.
const Queue = "asyncreply"

// Args is the River job of one operation. It carries only the ID: the
// recorded request stays in the operation's row, encrypted when configured.
type Args struct {
	OperationID string `json:"operation_id"`
	// Timeout is the operation's timeout, which bounds the job too: River
	// rescues a job whose worker died only once its timeout has passed.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// Kind implements river.JobArgs.
func (Args) Kind() string { return "asyncreply_operation" }

// MaxAttempts is how often an operation is tried before it fails for good.
// Attempts end early only when a worker dies or its process stops; a
// handler's failure is an outcome, not a retry.
const MaxAttempts = 10

// InsertOpts implements river.JobArgsWithInsertOpts.
func (Args) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: MaxAttempts, Priority: priorityFirst}
}

// Priorities of the jobs, in River's terms (1 is fetched first): an
// operation given a new job because the process running it died resumes
// before the operations still waiting for their first attempt, ahead of
// which it had been taken, rather than queue behind them all.
const (
	priorityResumed = 1
	priorityFirst   = 2
)

// ResumeOpts returns the insert options of the new job a backend gives an
// operation whose process died.
func ResumeOpts() *river.InsertOpts { return &river.InsertOpts{Priority: priorityResumed} }

// timeoutGrace is added to an operation's timeout for its River job: the
// middleware ends the replay at the timeout itself; River's deadline only
// catches an execution that failed to.
const timeoutGrace = 5 * time.Second

// Worker executes operations for River. Create it with NewWorker, register
// it with river.AddWorker, and set its ExecuteFunc at Start.
type Worker struct {
	river.WorkerDefaults[Args]

	mu       sync.RWMutex
	execute  backend.ExecuteFunc // set once the River client started: Stop must stop it
	stopping atomic.Bool
	complete func(ctx context.Context, id string, outcome backend.Outcome) (bool, error)

	logger       *slog.Logger
	liveness     Liveness
	stopBeating  context.CancelFunc
	beatingEnded chan struct{}
}

// Liveness is how a process executing operations shows the others sharing
// its backend that it is alive, so that the jobs of one that died can be
// run again at once: River alone would rescue them only once the
// operation's whole timeout has passed, ten minutes by default. The
// process records itself under ID, which is also its River client's ID and
// so names it in the jobs it takes, as Start begins and every Interval
// after; a backend's sweep reschedules the jobs taken by a process silent
// for DeadAfter(Interval).
type Liveness struct {
	ID       string
	Interval time.Duration
	// Beat records that the process is alive now.
	Beat func(ctx context.Context) error
	// Forget deletes the record once the process has stopped executing.
	Forget func(ctx context.Context) error
}

// DefaultHeartbeatInterval is the backends' default Liveness.Interval.
const DefaultHeartbeatInterval = 5 * time.Second

// DeadAfter is how long a process may stay silent before its jobs are
// taken from it: several missed beats, so that one slow write to a busy
// store does not make a live process look dead.
func DeadAfter(interval time.Duration) time.Duration { return 6 * interval }

// NewID returns a random process ID for Liveness and River.
func NewID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "asyncreply-" + base64.RawURLEncoding.EncodeToString(b)
}

// Abandoned is the failure of an operation whose every attempt was
// interrupted (workers died, the store was unreachable): no worker will
// finish it. Backends also give it, in their sweeps, to operations whose
// River job was discarded.
var Abandoned = backend.Failure{
	Status: 503,
	Title:  "Operation abandoned",
	Detail: "Every attempt to execute the operation was interrupted before it finished.",
}

// NewWorker returns a worker. complete is the backend's Complete, with
// which the worker fails an operation whose last attempt was abandoned,
// rather than leave it unfinished.
func NewWorker(complete func(ctx context.Context, id string, outcome backend.Outcome) (bool, error), liveness Liveness) *Worker {
	return &Worker{complete: complete, liveness: liveness}
}

// beat records the process as alive every Interval until stopBeating.
func (w *Worker) beat(ctx context.Context) {
	defer close(w.beatingEnded)
	ticker := time.NewTicker(w.liveness.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			beatCtx, cancel := context.WithTimeout(ctx, w.liveness.Interval)
			if err := w.liveness.Beat(beatCtx); err != nil && ctx.Err() == nil {
				w.logger.Warn("asyncreply: recording that this process is alive failed; if it keeps failing, other processes will run its operations again", "error", err)
			}
			cancel()
		}
	}
}

// ClientConfig is what differs between the River clients of the backends.
type ClientConfig struct {
	Concurrency int           // MaxWorkers of Queue
	RescueAfter time.Duration // see the backends' Config.RescueAfter
	Schema      string        // PostgreSQL only
	Logger      *slog.Logger

	// FetchCooldown and FetchPollInterval are River's: the least time
	// between two fetches of jobs, which also spaces the notifications of
	// new jobs, and the longest without one. Zero keeps River's defaults
	// (100 ms and 1 s).
	FetchCooldown, FetchPollInterval time.Duration

	// Deliveries, when set, is registered to make deliveries, in
	// DeliveryQueue once DeliveryWorker.DeliverWith adds it.
	Deliveries *DeliveryWorker
}

// NewClient returns a River client on driver that runs operations with w.
func NewClient[TTx any](driver riverdriver.Driver[TTx], w *Worker, cfg ClientConfig) (*river.Client[TTx], error) {
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, w); err != nil {
		return nil, err
	}
	queues := map[string]river.QueueConfig{Queue: {MaxWorkers: cfg.Concurrency}}
	if cfg.Deliveries != nil {
		if err := river.AddWorkerSafely(workers, cfg.Deliveries); err != nil {
			return nil, err
		}
	}
	w.logger = cmp.Or(cfg.Logger, slog.Default())
	client, err := river.NewClient(driver, &river.Config{
		Queues:               queues,
		Workers:              workers,
		ID:                   w.liveness.ID, // names this process in the jobs it takes
		Schema:               cfg.Schema,
		Logger:               cfg.Logger,
		JobTimeout:           cfg.RescueAfter,
		RescueStuckJobsAfter: cfg.RescueAfter,
		MaxAttempts:          MaxAttempts,
		FetchCooldown:        cfg.FetchCooldown,
		FetchPollInterval:    cfg.FetchPollInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the River client: %w", err)
	}
	return client, nil
}

// Client is the part of a River client that Start and Stop need.
type Client interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	StopAndCancel(ctx context.Context) error
}

// Start implements backend.Backend.Start for a backend whose operations run
// on client: it sets the function that runs them and starts client, which
// runs until Stop. It returns an error if called before.
func (w *Worker) Start(ctx context.Context, client Client, execute backend.ExecuteFunc) error {
	if execute == nil {
		return errors.New("an ExecuteFunc is required to start executing")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.execute != nil {
		return errors.New("backend already started")
	}
	// Recorded before River takes a job, so that no job of this process is
	// ever taken by one that looks dead.
	if err := w.liveness.Beat(ctx); err != nil {
		return fmt.Errorf("recording this process as alive: %w", err)
	}
	// Executions must not end with the context of whoever called Start.
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("starting River: %w", err)
	}
	w.execute = execute
	beatCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.stopBeating, w.beatingEnded = cancel, make(chan struct{})
	go w.beat(beatCtx)
	return nil
}

// NextRetry implements river.Worker. An attempt is retried only when it was
// abandoned — its worker died, or the store was unreachable when it tried to
// record the outcome — so the retry should come as soon as the store is
// likely back: seconds, doubling up to half a minute, not River's default
// attempt⁴ seconds, which waits 81 s after the third failure.
func (w *Worker) NextRetry(job *river.Job[Args]) time.Time {
	return time.Now().Add(time.Second << min(max(job.Attempt-1, 0), 5))
}

// Timeout implements river.Worker.
func (w *Worker) Timeout(job *river.Job[Args]) time.Duration {
	if job.Args.Timeout <= 0 {
		// No limit, as the operation has none; River then never rescues the
		// job from a dead worker, as backend.Operation.Timeout documents.
		return -1
	}
	return job.Args.Timeout + timeoutGrace
}

// Work implements river.Worker. It translates the ways River ends a job's
// context into the causes the backend contract promises: ErrCanceled for a
// remote cancel, ErrShutdown for a stop.
func (w *Worker) Work(ctx context.Context, job *river.Job[Args]) error {
	w.mu.RLock()
	execute := w.execute
	w.mu.RUnlock()
	if execute == nil {
		return river.JobSnooze(time.Second) // not started: leave it for later
	}

	execCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	stop := context.AfterFunc(ctx, func() {
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, river.ErrJobCancelledRemotely):
			cancel(backend.ErrCanceled)
		case w.stopping.Load():
			cancel(backend.ErrShutdown)
		default:
			cancel(cause)
		}
	})
	defer stop()

	err := execute(execCtx, job.Args.OperationID)
	switch {
	case err == nil:
		return nil
	case errors.Is(context.Cause(execCtx), backend.ErrShutdown):
		// River puts a job whose worker returns context.Canceled during a
		// stop back in the queue without counting the attempt.
		return fmt.Errorf("%w: %w", context.Canceled, err)
	case job.Attempt >= job.MaxAttempts:
		failure := Abandoned
		_, failErr := w.complete(context.WithoutCancel(ctx), job.Args.OperationID,
			backend.Outcome{Status: backend.Failed, Failure: &failure, At: time.Now()})
		if failErr != nil {
			return errors.Join(err, failErr)
		}
		return err
	}
	return err
}

// Stop stops client as backend.Backend.Stop promises, if Start started it:
// running executions may finish until ctx ends, then they are canceled with
// cause ErrShutdown and waited for. It returns ctx's error when it had to
// cancel.
func (w *Worker) Stop(ctx context.Context, client Client) error {
	w.mu.RLock()
	started := w.execute != nil
	w.mu.RUnlock()
	if !started {
		return nil
	}
	err := w.stopClient(ctx, client)
	// Executing no more: this process's jobs are back in the queue.
	w.stopBeating()
	<-w.beatingEnded
	forgetCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if forgetErr := w.liveness.Forget(forgetCtx); forgetErr != nil {
		w.logger.Debug("asyncreply: deleting this process's liveness record failed; the sweep will", "error", forgetErr)
	}
	return err
}

func (w *Worker) stopClient(ctx context.Context, client Client) error {
	err := client.Stop(ctx)
	if err == nil || ctx.Err() == nil {
		return err
	}
	w.stopping.Store(true)
	if err := client.StopAndCancel(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	return ctx.Err()
}
