package backendtest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// ---- helpers: operations ----

// newID returns a random 128-bit ID, base64url as the middleware makes them,
// so that tests sharing a store never collide.
func newID() string {
	id := make([]byte, 16)
	rand.Read(id)
	return base64.RawURLEncoding.EncodeToString(id)
}

// randomBytes returns n random bytes starting with a NUL and an invalid UTF-8
// byte, so that a store that treats the bytes as text fails.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	b[0], b[1] = 0x00, 0xff
	return b
}

// now returns the current time at the microsecond precision databases keep,
// so that times round-trip exactly.
func now() time.Time {
	return time.Now().Truncate(time.Microsecond)
}

// newOperation returns an operation as the middleware creates it, with every
// field that Create stores set to a distinctive value.
func newOperation(createdAt time.Time) *backend.Operation {
	return &backend.Operation{
		ID:          newID(),
		Owner:       "owner-" + newID(),
		Fingerprint: randomBytes(32),
		Status:      backend.NotStarted,
		Request:     randomBytes(512),
		Timeout:     90*time.Second + 250*time.Millisecond,
		Retention:   36*time.Hour + 30*time.Minute,
		CreatedAt:   createdAt,
		UpdatedAt:   createdAt,
	}
}

// cloneOperation copies op deeply, so that a kept expectation cannot change
// with the operation handed to the backend.
func cloneOperation(op *backend.Operation) *backend.Operation {
	c := *op
	c.Fingerprint = bytes.Clone(op.Fingerprint)
	c.Request = bytes.Clone(op.Request)
	c.Response = bytes.Clone(op.Response)
	if op.Failure != nil {
		f := *op.Failure
		c.Failure = &f
	}
	return &c
}

// finished is an operation brought to a done status, as Get returned it then.
type finished struct {
	what string
	op   *backend.Operation
}

// finishedOperations returns one operation for each way of becoming done, so
// that the rules about done operations are checked against all of them.
func finishedOperations(t *testing.T, b backend.Backend) []finished {
	t.Helper()
	finish := func(what string, run bool, end func(id string)) finished {
		op := newOperation(now())
		mustCreate(t, b, op)
		if run {
			mustMarkRunning(t, b, op.ID, now())
			mustSetProgress(t, b, op.ID, backend.Progress{Percent: 60, Message: "last progress"})
		}
		end(op.ID)
		return finished{what: what, op: mustGet(t, b, op.ID)}
	}
	return []finished{
		finish("a succeeded operation", true, func(id string) {
			mustComplete(t, b, id, backend.Outcome{Status: backend.Succeeded, Response: []byte("first response"), At: now()})
		}),
		finish("a failed operation", true, func(id string) {
			mustComplete(t, b, id, backend.Outcome{Status: backend.Failed, Failure: &backend.Failure{Status: 500, Title: "Internal Server Error", Detail: "first failure"}, At: now()})
		}),
		finish("an operation canceled while running", true, func(id string) { mustCancel(t, b, id, now()) }),
		finish("an operation canceled before it ran", false, func(id string) { mustCancel(t, b, id, now()) }),
	}
}

// ---- helpers: calls that must succeed ----

func mustCreate(t *testing.T, b backend.Backend, op *backend.Operation) *backend.Operation {
	t.Helper()
	stored, created, err := b.Create(t.Context(), op)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if !created {
		t.Fatalf("Create of new operation %q returned created = false", op.ID)
	}
	return stored
}

func mustGet(t *testing.T, b backend.Backend, id string) *backend.Operation {
	t.Helper()
	op, err := b.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%q): %v", id, err)
	}
	return op
}

func mustMarkRunning(t *testing.T, b backend.Backend, id string, at time.Time) *backend.Operation {
	t.Helper()
	op, err := b.MarkRunning(t.Context(), id, at)
	if err != nil {
		t.Fatalf("MarkRunning(%q): %v", id, err)
	}
	return op
}

func mustSetProgress(t *testing.T, b backend.Backend, id string, progress backend.Progress) {
	t.Helper()
	if err := b.SetProgress(t.Context(), id, progress, now()); err != nil {
		t.Fatalf("SetProgress(%q): %v", id, err)
	}
}

func mustComplete(t *testing.T, b backend.Backend, id string, outcome backend.Outcome) {
	t.Helper()
	won, err := b.Complete(t.Context(), id, outcome)
	if err != nil {
		t.Fatalf("Complete(%q, %s): %v", id, outcome.Status, err)
	}
	if !won {
		t.Fatalf("first Complete(%q, %s) returned won = false", id, outcome.Status)
	}
}

func mustCancel(t *testing.T, b backend.Backend, id string, at time.Time) {
	t.Helper()
	if err := b.Cancel(t.Context(), id, at); err != nil {
		t.Fatalf("Cancel(%q): %v", id, err)
	}
}

// ---- helpers: assertions ----

func requireErrorIs(t *testing.T, err, target error, call string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s returned error %v, want one matching %v", call, err, target)
	}
}

// assertOperation compares every field of got with want, reporting each
// difference, so that one run shows everything a backend loses.
func assertOperation(t *testing.T, what string, got, want *backend.Operation) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: nil operation", what)
		return
	}
	diff := func(field string, g, w any) { t.Errorf("%s: %s = %v, want %v", what, field, g, w) }
	if got.ID != want.ID {
		diff("ID", got.ID, want.ID)
	}
	if got.Owner != want.Owner {
		diff("Owner", got.Owner, want.Owner)
	}
	if got.IdempotencyKey != want.IdempotencyKey {
		diff("IdempotencyKey", got.IdempotencyKey, want.IdempotencyKey)
	}
	if !bytes.Equal(got.Fingerprint, want.Fingerprint) {
		t.Errorf("%s: Fingerprint %s", what, bytesDiff(got.Fingerprint, want.Fingerprint))
	}
	if got.Status != want.Status {
		diff("Status", got.Status, want.Status)
	}
	if got.Progress != want.Progress {
		diff("Progress", got.Progress, want.Progress)
	}
	if got.Attempt != want.Attempt {
		diff("Attempt", got.Attempt, want.Attempt)
	}
	if !bytes.Equal(got.Request, want.Request) {
		t.Errorf("%s: Request %s", what, bytesDiff(got.Request, want.Request))
	}
	if !bytes.Equal(got.Response, want.Response) {
		t.Errorf("%s: Response %s", what, bytesDiff(got.Response, want.Response))
	}
	if !sameFailure(got.Failure, want.Failure) {
		diff("Failure", describeFailure(got.Failure), describeFailure(want.Failure))
	}
	if got.Timeout != want.Timeout {
		diff("Timeout", got.Timeout, want.Timeout)
	}
	if got.Retention != want.Retention {
		diff("Retention", got.Retention, want.Retention)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		diff("CreatedAt", got.CreatedAt, want.CreatedAt)
	}
	if !got.UpdatedAt.Equal(want.UpdatedAt) {
		diff("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	}
	if !got.ExpiresAt.Equal(want.ExpiresAt) {
		diff("ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	}
	if !got.CollectedAt.Equal(want.CollectedAt) {
		diff("CollectedAt", got.CollectedAt, want.CollectedAt)
	}
}

// assertDone checks what every done operation shows: its status, its expiry,
// and that the recorded request, which holds credentials, is gone.
func assertDone(t *testing.T, what string, got *backend.Operation, status backend.Status, expiresAt time.Time) {
	t.Helper()
	if got.Status != status {
		t.Errorf("%s: Status = %q, want %q", what, got.Status, status)
	}
	if !got.ExpiresAt.Equal(expiresAt) {
		t.Errorf("%s: ExpiresAt = %v, want %v (when it finished plus Retention)", what, got.ExpiresAt, expiresAt)
	}
	if len(got.Request) != 0 {
		t.Errorf("%s: Request still holds %d bytes after the operation became %s; it must be dropped", what, len(got.Request), got.Status)
	}
}

// bytesDiff says where got first differs from want, without printing
// hundreds of bytes.
func bytesDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	window := func(b []byte) []byte { return b[i:min(len(b), i+8)] }
	return fmt.Sprintf("differs at byte %d: got %d bytes (…%x…), want %d bytes (…%x…)", i, len(got), window(got), len(want), window(want))
}

func sameFailure(a, b *backend.Failure) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func describeFailure(f *backend.Failure) string {
	if f == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%+v", *f)
}

// ---- helpers: waiting ----

// drain discards a pending value, if any.
func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}
