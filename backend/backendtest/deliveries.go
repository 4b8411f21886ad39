package backendtest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/testwait"
)

// notifierRule runs a rule of [backend.Notifier], skipped when the backend
// does not implement it: delivering terminal transitions is optional.
func (r runner) notifierRule(t *testing.T, name string, test func(t *testing.T, b backend.Backend, n backend.Notifier)) {
	t.Helper()
	r.rule(t, name, func(t *testing.T, b backend.Backend) {
		n, ok := b.(backend.Notifier)
		if !ok {
			t.Skip("the backend does not implement backend.Notifier")
		}
		test(t, b, n)
	})
}

// deliveryCalls records the attempts a DeliverFunc was asked to make and
// answers each with the next of its results (the last one once they run
// out).
type deliveryCalls struct {
	calls   chan backend.Delivery
	results chan backend.DeliveryResult
}

func newDeliveryCalls(results ...backend.DeliveryResult) *deliveryCalls {
	c := &deliveryCalls{calls: make(chan backend.Delivery, 100), results: make(chan backend.DeliveryResult, len(results))}
	for _, r := range results {
		c.results <- r
	}
	return c
}

func (c *deliveryCalls) deliver(ctx context.Context, d backend.Delivery) backend.DeliveryResult {
	c.calls <- d
	select {
	case r := <-c.results:
		r.At = now()
		return r
	default:
		return backend.DeliveryResult{Status: 204, At: now()}
	}
}

// startDelivering sets calls' DeliverFunc and starts b with an ExecuteFunc
// that does nothing: the rules complete their operations themselves.
func startDelivering(t *testing.T, b backend.Backend, n backend.Notifier, calls *deliveryCalls) {
	t.Helper()
	if err := n.DeliverWith(calls.deliver); err != nil {
		t.Fatalf("DeliverWith: %v", err)
	}
	if err := b.Start(t.Context(), func(context.Context, string) error { return nil }); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

func mustDeliveries(t *testing.T, n backend.Notifier, id string) []backend.Delivery {
	t.Helper()
	ds, err := n.Deliveries(context.Background(), id)
	if err != nil {
		t.Fatalf("Deliveries(%s): %v", id, err)
	}
	return ds
}

// awaitAttempts waits for n attempts and returns them, keyed by target.
func awaitAttempts(t *testing.T, calls *deliveryCalls, n int, what string) map[string][]backend.Delivery {
	t.Helper()
	got := make(map[string][]backend.Delivery)
	for range n {
		d := testwait.Recv(t, calls.calls, what)
		got[d.Target] = append(got[d.Target], d)
	}
	return got
}

func testTargetsRoundTrip(t *testing.T, b backend.Backend, n backend.Notifier) {
	op := newOperation(now())
	op.Targets = []string{"callback https://a.example/hook", "publish nats"}
	mustCreate(t, b, op)
	got := mustGet(t, b, op.ID)
	if !slices.Equal(got.Targets, op.Targets) {
		t.Errorf("Get: Targets = %q, want %q", got.Targets, op.Targets)
	}
	if ds := mustDeliveries(t, n, op.ID); len(ds) != 0 {
		t.Errorf("Deliveries of an operation not done = %+v, want none", ds)
	}
	plain := newOperation(now())
	mustCreate(t, b, plain)
	if got := mustGet(t, b, plain.ID); len(got.Targets) != 0 {
		t.Errorf("Get: Targets = %q for an operation created without, want none", got.Targets)
	}
}

func testDeliveriesUnknownIsNotFound(t *testing.T, b backend.Backend, n backend.Notifier) {
	_, err := n.Deliveries(t.Context(), newID())
	requireErrorIs(t, err, backend.ErrNotFound, "Deliveries of an unknown operation")
}

// Complete schedules one delivery per target, made once the backend starts
// even when the transition came before; a late Complete and a Cancel of
// the done operation schedule nothing more.
func testCompleteDeliversEachTargetOnce(t *testing.T, b backend.Backend, n backend.Notifier) {
	op := newOperation(now())
	op.Targets = []string{"callback https://a.example/hook", "notify https://b.example/hook"}
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())
	mustComplete(t, b, op.ID, backend.Outcome{Status: backend.Succeeded, Response: []byte("r"), At: now()})
	if won, err := b.Complete(t.Context(), op.ID, backend.Outcome{Status: backend.Failed, Failure: &backend.Failure{Status: 500}, At: now()}); err != nil || won {
		t.Fatalf("late Complete = %v, %v; want false, nil", won, err)
	}

	ds := mustDeliveries(t, n, op.ID)
	if len(ds) != 2 || ds[0].Target != op.Targets[0] || ds[1].Target != op.Targets[1] {
		t.Fatalf("Deliveries before any attempt = %+v, want one per target in order", ds)
	}
	for _, d := range ds {
		if d.Status != backend.Succeeded || d.Attempts != 0 || !d.DeliveredAt.IsZero() || d.OperationID != op.ID {
			t.Errorf("delivery before any attempt = %+v, want Succeeded, no attempt", d)
		}
	}

	calls := newDeliveryCalls()
	startDelivering(t, b, n, calls)
	attempts := awaitAttempts(t, calls, 2, "an attempt per target")
	for _, target := range op.Targets {
		if len(attempts[target]) != 1 {
			t.Errorf("attempts at %q = %d, want 1", target, len(attempts[target]))
		}
	}
	mustCancel(t, b, op.ID, now())
	stopWithin(t, b, testwait.Timeout)
	for _, d := range mustDeliveries(t, n, op.ID) {
		if d.Status != backend.Succeeded || d.Attempts != 1 || d.LastStatus != 204 || d.DeliveredAt.IsZero() || !d.GaveUpAt.IsZero() {
			t.Errorf("delivery after its attempt = %+v, want Succeeded, 1 attempt, 204, delivered", d)
		}
	}
	select {
	case d := <-calls.calls:
		t.Errorf("another attempt after delivery: %+v", d)
	default:
	}
}

func testCancelDeliversCanceled(t *testing.T, b backend.Backend, n backend.Notifier) {
	calls := newDeliveryCalls()
	startDelivering(t, b, n, calls)
	op := newOperation(now())
	op.Targets = []string{"callback https://a.example/hook"}
	mustCreate(t, b, op)
	mustCancel(t, b, op.ID, now())
	d := testwait.Recv(t, calls.calls, "the delivery of a cancellation")
	if d.Status != backend.Canceled || d.Target != op.Targets[0] || d.OperationID != op.ID {
		t.Errorf("delivery = %+v, want Canceled of %s to %q", d, op.ID, op.Targets[0])
	}
}

func testFailedAttemptIsRetried(t *testing.T, b backend.Backend, n backend.Notifier) {
	calls := newDeliveryCalls(backend.DeliveryResult{Err: errors.New("503 from the target"), Status: 503, RetryAfter: time.Millisecond})
	startDelivering(t, b, n, calls)
	op := newOperation(now())
	op.Targets = []string{"notify https://b.example/hook"}
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())
	mustComplete(t, b, op.ID, backend.Outcome{Status: backend.Failed, Failure: &backend.Failure{Status: 502, Title: "Bad Gateway"}, At: now()})

	first := testwait.Recv(t, calls.calls, "the first attempt")
	second := testwait.Recv(t, calls.calls, "the attempt after a failed one")
	if first.Attempts != 0 || second.Attempts != 1 || second.LastStatus != 503 || second.LastError == "" || second.Status != backend.Failed {
		t.Errorf("attempts = %+v then %+v; want the second to show the first's failure", first, second)
	}
	stopWithin(t, b, testwait.Timeout)
	ds := mustDeliveries(t, n, op.ID)
	if len(ds) != 1 || ds[0].Attempts != 2 || ds[0].LastStatus != 204 || ds[0].DeliveredAt.IsZero() || ds[0].LastError != "" {
		t.Errorf("Deliveries = %+v, want 2 attempts, delivered with 204", ds)
	}
}

func testGivingUpIsRecorded(t *testing.T, b backend.Backend, n backend.Notifier) {
	calls := newDeliveryCalls(backend.DeliveryResult{Err: errors.New("address not allowed")})
	startDelivering(t, b, n, calls)
	op := newOperation(now())
	op.Targets = []string{"callback https://c.example/hook"}
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())
	mustComplete(t, b, op.ID, backend.Outcome{Status: backend.Succeeded, At: now()})
	testwait.Recv(t, calls.calls, "the only attempt")
	stopWithin(t, b, testwait.Timeout)
	ds := mustDeliveries(t, n, op.ID)
	if len(ds) != 1 || ds[0].Attempts != 1 || ds[0].GaveUpAt.IsZero() || !ds[0].DeliveredAt.IsZero() || ds[0].LastError != "address not allowed" {
		t.Errorf("Deliveries = %+v, want 1 attempt, given up, with its error", ds)
	}
}

func testNoTargetsNoDeliveries(t *testing.T, b backend.Backend, n backend.Notifier) {
	calls := newDeliveryCalls()
	startDelivering(t, b, n, calls)
	op := newOperation(now())
	mustCreate(t, b, op)
	mustMarkRunning(t, b, op.ID, now())
	mustComplete(t, b, op.ID, backend.Outcome{Status: backend.Succeeded, At: now()})
	stopWithin(t, b, testwait.Timeout)
	if ds := mustDeliveries(t, n, op.ID); len(ds) != 0 {
		t.Errorf("Deliveries of an operation without targets = %+v, want none", ds)
	}
	select {
	case d := <-calls.calls:
		t.Errorf("an attempt for an operation without targets: %+v", d)
	default:
	}
}
