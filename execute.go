package asyncreply

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// errTimeout is the cause of a replay's context when its Timeout passes.
var errTimeout = errors.New("operation timed out")

// execute is the backend.ExecuteFunc: one attempt at an operation. It
// replays the recorded request through the application, stores the outcome,
// and returns an error only when the attempt was abandoned and should be
// handed back to the backend.
func (m *Middleware) execute(ctx context.Context, id string) error {
	started := m.cfg.now()
	op, err := m.cfg.Backend.MarkRunning(ctx, id, started)
	if errors.Is(err, backend.ErrNotFound) || errors.Is(err, backend.ErrFinished) {
		return nil // canceled, or finished by an earlier attempt
	}
	if err != nil {
		return fmt.Errorf("asyncreply: starting operation %s: %w", id, err)
	}
	m.metrics.observeStarted(op, started)
	m.metrics.replays.Inc()
	outcome, err := m.replayRecorded(ctx, op)
	m.metrics.replays.Dec()
	if errors.Is(err, backend.ErrCanceled) {
		m.cfg.Logger.Info("asyncreply: operation canceled", "operation", id)
		return nil
	}
	if err != nil {
		m.cfg.Logger.Warn("asyncreply: operation abandoned", "operation", id, "error", err)
		return err
	}
	return m.complete(ctx, op, outcome)
}

// complete stores an outcome. The backend keeps the first one stored, so
// completing twice (a timeout decided early, then the handler's return) is
// harmless.
func (m *Middleware) complete(ctx context.Context, op *backend.Operation, outcome backend.Outcome) error {
	outcome.At = m.cfg.now()
	won, err := m.cfg.Backend.Complete(ctx, op.ID, outcome)
	if err != nil {
		return fmt.Errorf("asyncreply: completing operation %s: %w", op.ID, err)
	}
	if won {
		m.metrics.observeCompleted(op, outcome)
		attrs := []any{"operation", op.ID, "status", outcome.Status, "attempt", op.Attempt}
		if outcome.Failure != nil {
			attrs = append(attrs, "failure", outcome.Failure.Status)
		}
		m.cfg.Logger.Info("asyncreply: operation finished", attrs...)
	}
	return nil
}

// replayRecorded runs the recorded request through the application and turns what
// happened into an outcome. It returns an error instead when the execution
// context was canceled from outside (cancel, shutdown), since then there is
// nothing to store.
func (m *Middleware) replayRecorded(ctx context.Context, op *backend.Operation) (outcome backend.Outcome, abandoned error) {
	unreadable := failure(http.StatusInternalServerError, "Recorded request unreadable", "The recorded request could not be read back.")
	plain, err := m.sealer.open(op.ID, op.Request)
	if err != nil {
		m.cfg.Logger.Error("asyncreply: recorded request cannot be decrypted with the configured key", "operation", op.ID)
		return unreadable, nil
	}
	recorded, err := unmarshalRecordedRequest(plain)
	if err != nil {
		m.cfg.Logger.Error("asyncreply: recorded request corrupt", "operation", op.ID, "error", err)
		return unreadable, nil
	}

	runCtx := ctx
	if op.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, op.Timeout, errTimeout)
		defer cancel()
		// The timeout's outcome is stored when it passes, whatever the
		// handler does next; the handler still runs in this goroutine, so the
		// worker stays busy until it returns and no goroutine outlives it. A
		// timer of its own rather than context.AfterFunc on runCtx: it costs
		// less, and only the timeout, not a cancel, stores anything.
		decided := make(chan struct{})
		timer := time.AfterFunc(op.Timeout, func() {
			defer close(decided)
			<-runCtx.Done() // the deadline's timer may fire a moment after this one
			if errors.Is(context.Cause(runCtx), errTimeout) {
				if err := m.complete(ctx, op, timedOut(op)); err != nil {
					m.cfg.Logger.Warn("asyncreply: storing a timeout failed", "operation", op.ID, "error", err)
				}
			}
		})
		defer func() {
			if !timer.Stop() {
				<-decided
			}
		}()
	}

	replayCtx, span := m.startReplay(runCtx, op, recorded)
	rec := newResponseRecorder(m.cfg.MaxResponseBytes, recorded.Method)
	if span != nil {
		defer func() { endReplay(span, outcome, rec.status, abandoned) }()
	}
	rp := &replayState{id: op.ID}
	st := &requestState{m: m, replay: rp}
	req, err := recorded.newRequest(context.WithValue(replayCtx, stateKey{}, st))
	if err != nil {
		m.cfg.Logger.Error("asyncreply: recorded request corrupt", "operation", op.ID, "error", err)
		return unreadable, nil
	}
	panicked := m.serveReplay(rec, req)

	switch cause := context.Cause(runCtx); {
	case errors.Is(cause, errTimeout):
		return timedOut(op), nil
	case cause != nil && ctx.Err() != nil:
		return backend.Outcome{}, context.Cause(ctx)
	case panicked:
		return failure(http.StatusInternalServerError, "Internal Server Error", "The handler failed while producing the response."), nil
	case rp.failure != nil:
		return backend.Outcome{Status: backend.Failed, Failure: rp.failure}, nil
	case rec.overflow:
		return failure(http.StatusInternalServerError, "Response too large",
			fmt.Sprintf("The response exceeded the limit of %d bytes for stored responses.", m.cfg.MaxResponseBytes)), nil
	}
	stored := rec.response()
	if span != nil {
		replay := span.SpanContext() // for the collect's span to link to
		stored.Trace = &replay
	}
	return backend.Outcome{Status: backend.Succeeded, Response: m.sealer.seal(op.ID, stored.marshal())}, nil
}

// serveReplay runs the application on a replayed request and reports whether
// it panicked. A panic fails the operation, as it would have failed the
// synchronous request, instead of taking the worker down.
func (m *Middleware) serveReplay(rec *responseRecorder, req *http.Request) (panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			panicked = true
			if p != http.ErrAbortHandler {
				id, _ := OperationID(req.Context())
				m.cfg.Logger.Error("asyncreply: handler panicked during replay", "operation", id,
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}
	}()
	m.app.ServeHTTP(rec, req)
	return false
}

func timedOut(op *backend.Operation) backend.Outcome {
	return failure(http.StatusGatewayTimeout, "Gateway Timeout",
		fmt.Sprintf("The operation did not finish within its %s timeout.", op.Timeout))
}

func failure(status int, title, detail string) backend.Outcome {
	return backend.Outcome{Status: backend.Failed, Failure: &backend.Failure{Status: status, Title: title, Detail: detail}}
}

// reportProgress stores a replay's progress. A failure to store it is
// logged, not returned: progress is advisory and must not fail the handler.
func (m *Middleware) reportProgress(ctx context.Context, id string, percent int, message string) {
	err := m.cfg.Backend.SetProgress(context.WithoutCancel(ctx), id, backend.Progress{Percent: percent, Message: message}, m.cfg.now())
	if err != nil && !errors.Is(err, backend.ErrFinished) {
		m.cfg.Logger.Warn("asyncreply: storing progress failed", "operation", id, "error", err)
	}
}
