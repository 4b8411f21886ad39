package asyncreply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// errTimeout is the cause of a replay's context when Config.Timeout passes.
var errTimeout = errors.New("operation timed out")

// execute is the backend.ExecuteFunc: one attempt at an operation. It
// replays the recorded request through the application, stores the outcome,
// and returns an error only when the attempt was abandoned and should be
// handed back to the backend.
func (m *Middleware) execute(ctx context.Context, id string) error {
	op, err := m.cfg.Backend.MarkRunning(ctx, id, m.cfg.now())
	if errors.Is(err, backend.ErrNotFound) || errors.Is(err, backend.ErrFinished) {
		return nil // canceled, or finished by an earlier attempt
	}
	if err != nil {
		return fmt.Errorf("asyncreply: starting operation %s: %w", id, err)
	}
	log := m.cfg.Logger.With("operation", id)

	outcome, err := m.replay(ctx, op, log)
	if errors.Is(err, backend.ErrCanceled) {
		log.Info("asyncreply: operation canceled")
		return nil
	}
	if err != nil {
		log.Warn("asyncreply: operation abandoned", "error", err)
		return err
	}
	outcome.At = m.cfg.now()
	storeCtx, cancel := storeContext(ctx)
	defer cancel()
	won, err := m.cfg.Backend.Complete(storeCtx, id, outcome)
	if err != nil {
		return fmt.Errorf("asyncreply: completing operation %s: %w", id, err)
	}
	if won {
		attrs := []any{"status", outcome.Status, "attempt", op.Attempt}
		if outcome.Failure != nil {
			attrs = append(attrs, "failure", outcome.Failure.Status)
		}
		log.Info("asyncreply: operation finished", attrs...)
	}
	return nil
}

// handlerResult is how a replayed handler returned.
type handlerResult struct {
	panicked any
}

// replay runs the recorded request through the application and turns what
// happened into an outcome. It returns an error instead when the execution
// context was canceled from outside (cancel, shutdown), since then there is
// nothing to store.
func (m *Middleware) replay(ctx context.Context, op *backend.Operation, log *slog.Logger) (backend.Outcome, error) {
	plain, err := m.sealer.open(op.ID, op.Request)
	if err != nil {
		return failure(http.StatusInternalServerError, "Recorded request unreadable", "The recorded request could not be decrypted with the configured key."), nil
	}
	recorded, err := unmarshalRecordedRequest(plain)
	if err != nil {
		log.Error("asyncreply: recorded request corrupt", "error", err)
		return failure(http.StatusInternalServerError, "Recorded request unreadable", "The recorded request is corrupt."), nil
	}

	runCtx := ctx
	if op.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, op.Timeout, errTimeout)
		defer cancel()
	}
	st := &requestState{m: m, replay: &replay{id: op.ID}}
	req, err := recorded.newRequest(context.WithValue(runCtx, stateKey{}, st))
	if err != nil {
		log.Error("asyncreply: recorded request corrupt", "error", err)
		return failure(http.StatusInternalServerError, "Recorded request unreadable", "The recorded request is corrupt."), nil
	}

	rec := newResponseRecorder(m.cfg.MaxResponseBytes)
	returned := make(chan handlerResult, 1)
	go func() {
		var res handlerResult
		defer func() { returned <- res }()
		defer func() {
			if p := recover(); p != nil {
				res.panicked = p
				if p != http.ErrAbortHandler {
					log.Error("asyncreply: handler panicked during replay", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				}
			}
		}()
		m.app.ServeHTTP(rec, req)
	}()

	var res handlerResult
	select {
	case res = <-returned:
	case <-runCtx.Done():
		// The outcome is decided now, whatever the handler does next, but the
		// worker stays busy until the handler returns, so that concurrency
		// limits stay true and no goroutine outlives Shutdown.
		timer := time.AfterFunc(5*time.Second, func() {
			log.Warn("asyncreply: handler still running after its context ended; it should watch r.Context()")
		})
		res = <-returned
		timer.Stop()
	}
	switch cause := context.Cause(runCtx); {
	case errors.Is(cause, errTimeout):
		return failure(http.StatusGatewayTimeout, "Gateway Timeout",
			fmt.Sprintf("The operation did not finish within its %s timeout.", op.Timeout)), nil
	case cause != nil && ctx.Err() != nil:
		return backend.Outcome{}, context.Cause(ctx)
	}
	if res.panicked != nil {
		return failure(http.StatusInternalServerError, "Internal Server Error", "The handler failed while producing the response."), nil
	}
	if rec.overflow {
		return failure(http.StatusInternalServerError, "Response too large",
			fmt.Sprintf("The response exceeded the limit of %d bytes for stored responses.", m.cfg.MaxResponseBytes)), nil
	}
	response := rec.response()
	return backend.Outcome{Status: backend.Succeeded, Response: m.sealer.seal(op.ID, response.marshal())}, nil
}

func failure(status int, title, detail string) backend.Outcome {
	return backend.Outcome{Status: backend.Failed, Failure: &backend.Failure{Status: status, Title: title, Detail: detail}}
}

// reportProgress stores a replay's progress. A failure to store it is
// logged, not returned: progress is advisory and must not fail the handler.
func (m *Middleware) reportProgress(ctx context.Context, id string, percent int, message string) {
	storeCtx, cancel := storeContext(ctx)
	defer cancel()
	err := m.cfg.Backend.SetProgress(storeCtx, id, backend.Progress{Percent: percent, Message: message}, m.cfg.now())
	if err != nil && !errors.Is(err, backend.ErrFinished) {
		m.cfg.Logger.Warn("asyncreply: storing progress failed", "operation", id, "error", err)
	}
}
