// Package backend defines the seam between asyncreply and the stores that keep
// and execute operations: the [Backend] interface, the [Operation] record it
// stores, the optional interfaces [Local], [Lister], [ChangeLister] and
// [Notifier], and the sentinel
// errors every implementation translates its native errors into.
//
// The package is a leaf: it imports nothing from asyncreply, so backends in
// other modules can implement it without cycles. The conformance suite in
// package backendtest pins the contract down; a backend is correct when
// backendtest.Run passes against it.
//
// A backend stores opaque bytes. The recorded request and the stored response
// arrive already encoded (and encrypted, when a key is configured) by the
// middleware, so a backend never sees credentials in the clear and never needs
// to understand HTTP.
package backend

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Status is the state of an operation. The values are those of the Microsoft
// REST API guidelines for long-running operations.
type Status string

const (
	// NotStarted: accepted and persisted, waiting for a worker.
	NotStarted Status = "NotStarted"
	// Running: a worker is executing the operation.
	Running Status = "Running"
	// Succeeded: the application produced a response, which is stored. The
	// response's own status code may be anything, 500 included: the operation
	// succeeded in obtaining the answer a synchronous caller would have had.
	Succeeded Status = "Succeeded"
	// Failed: the operation ended without a response (a panic, a timeout, an
	// unreachable upstream, a response over the size limit, retries used up).
	Failed Status = "Failed"
	// Canceled: a client deleted the operation. Canceled operations are kept
	// only as tombstones so that a late completion cannot resurrect them.
	Canceled Status = "Canceled"
)

// Done reports whether s is terminal: no further transition will happen.
func (s Status) Done() bool {
	return s == Succeeded || s == Failed || s == Canceled
}

// Operation is one asynchronous request: the recorded request, where its
// execution stands, and, once finished, its outcome.
type Operation struct {
	// ID is the operation's unguessable identifier, chosen by the caller of
	// Create (at least 128 bits from crypto/rand).
	ID string
	// Owner identifies who may see the operation, as an opaque digest; empty
	// means anyone who knows the ID.
	Owner string
	// IdempotencyKey is the client's Idempotency-Key, empty when none was
	// sent. Within one Owner, at most one unexpired operation has a given key.
	IdempotencyKey string
	// Fingerprint is a digest of the request, compared when an idempotency key
	// is reused to tell a retry from a different request.
	Fingerprint []byte

	Status   Status
	Progress Progress
	// Attempt counts the executions started: 0 before the first.
	Attempt int

	// Request is the encoded recorded request. Backends drop it once the
	// operation is done: the credentials it holds are kept no longer than
	// needed.
	Request []byte
	// Response is the encoded stored response, set when Status is Succeeded.
	Response []byte
	// Failure describes why the operation failed, set when Status is Failed.
	Failure *Failure

	// Timeout bounds one execution; zero means no limit, and then a durable
	// backend cannot tell a dead worker from a slow one, so it never runs the
	// operation again. The middleware always sets one.
	Timeout time.Duration
	// Retention is how long the operation is kept once done.
	Retention time.Duration

	CreatedAt time.Time
	UpdatedAt time.Time
	// ExpiresAt is when a done operation may be swept: the time it finished
	// plus Retention. Zero while the operation is not done.
	ExpiresAt time.Time
	// CollectedAt is when MarkCollected first marked the stored response
	// collected; zero until then. Create ignores it.
	CollectedAt time.Time

	// Targets are where the operation's terminal transition is delivered,
	// opaque strings the middleware encodes and a [Notifier] stores with
	// the operation at Create and returns from Get. A backend that does
	// not implement Notifier may ignore them.
	Targets []string
}

// Expired reports whether op is done and its retention has passed at now.
// Callers treat an expired operation as gone even before a sweep removes it.
func (op *Operation) Expired(now time.Time) bool {
	return !op.ExpiresAt.IsZero() && !now.Before(op.ExpiresAt)
}

// Progress is what a running operation last reported about itself.
type Progress struct {
	// Percent is between 0 and 100.
	Percent int
	// Message is a short human-readable description of the current step.
	Message string
}

// Failure is why an operation ended without a response: the HTTP status a
// synchronous caller would have seen and an RFC 9457 title and detail.
type Failure struct {
	Status int
	Title  string
	Detail string
}

// Outcome is how an execution ended, as handed to Backend.Complete.
type Outcome struct {
	// Status is Succeeded or Failed.
	Status Status
	// Response is the encoded response when Status is Succeeded.
	Response []byte
	// Failure is set when Status is Failed.
	Failure *Failure
	// At is when the execution ended; the operation expires at At plus its
	// Retention.
	At time.Time
}

// ExecuteFunc runs one attempt of an operation. A backend calls it from its
// workers with a context that it cancels, with cause ErrCanceled, when the
// operation is canceled, and with cause ErrShutdown when Stop's context ends.
//
// It returns nil when the attempt is over, whatever its outcome: the function
// has completed the operation itself, or found it already done. It returns an
// error when the attempt was abandoned (a shutdown, a store outage while
// completing): a durable backend executes the operation again later, and a
// backend that cannot (memory) fails it.
type ExecuteFunc func(ctx context.Context, id string) error

// Backend stores operations and executes them. Every method is safe for
// concurrent use. Every method that can reach a store takes ctx first and
// returns ErrUnavailable (wrapped) when the store cannot be reached, so that
// callers answer 503 rather than acknowledge what was not stored.
type Backend interface {
	// Create atomically persists op and schedules it for execution. When
	// op.IdempotencyKey is set and an operation with the same Owner and key
	// exists that is neither expired (judged at op.CreatedAt) nor canceled,
	// Create stores nothing and returns that operation with created false. Once Create returns without
	// error, Get finds the operation, in this process and in every other
	// process sharing the store. When the backend bounds the operations
	// waiting to run and op would exceed a bound, Create stores nothing and
	// returns ErrQueueFull or ErrOwnerQueueFull.
	Create(ctx context.Context, op *Operation) (stored *Operation, created bool, err error)

	// Get returns the operation with the given ID, or ErrNotFound. It may
	// return an expired operation that has not been swept yet; callers check
	// Operation.Expired. Callers must not modify the returned operation's
	// byte slices, which a backend may share between callers to avoid copying
	// stored responses on every poll; what a caller passes in (to Create and
	// Complete) the backend copies or stores before returning.
	Get(ctx context.Context, id string) (*Operation, error)

	// MarkRunning moves the operation to Running and increments its Attempt,
	// whether it was NotStarted or Running (a retried attempt), and returns it
	// with its Request. It returns ErrFinished when the operation is done or
	// canceled, and ErrNotFound when it does not exist.
	MarkRunning(ctx context.Context, id string, at time.Time) (*Operation, error)

	// SetProgress records the progress of a running operation. It returns
	// ErrFinished when the operation is done.
	SetProgress(ctx context.Context, id string, progress Progress, at time.Time) error

	// Complete stores the outcome of an execution if the operation is not done
	// yet, and reports whether it did: the first completed attempt wins, and
	// later ones change nothing. It sets ExpiresAt to outcome.At plus Retention
	// and drops the recorded request.
	Complete(ctx context.Context, id string, outcome Outcome) (won bool, err error)

	// Cancel cancels and forgets the operation, whatever its state: it marks
	// it Canceled, drops its request, response and failure, cancels its
	// running execution's context with cause ErrCanceled, and never executes
	// it again. The canceled operation is kept as a tombstone, so that a late
	// Complete cannot resurrect it, until at plus Retention. Canceling a
	// canceled operation changes nothing and returns nil. It returns
	// ErrNotFound when the operation does not exist.
	Cancel(ctx context.Context, id string, at time.Time) error

	// MarkCollected marks the stored response of a succeeded operation
	// collected at at, and reports whether this call was the first to:
	// what a response may deliver only once (its Set-Cookie headers, as a
	// synchronous caller would have received them) goes to that caller
	// alone. Of concurrent calls, in any processes sharing the store,
	// exactly one returns first = true; later calls return false and leave
	// CollectedAt as the first one set it. It returns false, and changes
	// nothing, for an operation that has no response to collect (not done
	// yet, failed, or canceled), so that collecting it early does not use
	// up the collection. It returns ErrNotFound when the operation does not
	// exist. It changes neither UpdatedAt nor anything a watcher waits for,
	// so it need not wake watchers.
	MarkCollected(ctx context.Context, id string, at time.Time) (first bool, err error)

	// Sweep deletes operations whose ExpiresAt is not after now and returns
	// how many it deleted. Operations that are not done are never swept.
	Sweep(ctx context.Context, now time.Time) (int, error)

	// Watch returns a channel that receives a value after every change to the
	// operation (running, progress, completion, cancellation), and a function
	// that stops the watch and must be called. Changes that happen while the
	// receiver is busy are coalesced into one value, so a watcher re-reads the
	// operation with Get after each. To miss nothing, watch first, then Get.
	Watch(ctx context.Context, id string) (changes <-chan struct{}, stop func(), err error)

	// Start begins executing operations, past and future, with execute. It
	// returns at once; execution goes on in the backend's own goroutines until
	// Stop. Start may be called once.
	Start(ctx context.Context, execute ExecuteFunc) error

	// Stop stops taking operations for execution, waits for running
	// executions to return until ctx ends, then cancels them with cause
	// ErrShutdown and waits for them to return. It then releases the
	// backend's resources; no goroutine of the backend outlives it. The
	// store methods (Get and the others) still answer after Stop, so that
	// what Stop left behind can be read.
	Stop(ctx context.Context) error
}

// Local is an optional interface of a Backend that keeps its operations
// in this process only: they are lost when it exits, and no other process
// sees or executes them. Such a backend (package memory) needs no
// encryption at rest, and cannot serve an accept-only process, whose
// operations others must execute. A backend that does not implement Local
// is taken to store operations outside the process, where every process
// sharing the store finds them. A wrapper that embeds a concrete backend
// type inherits its answer; one that embeds the Backend interface hides it,
// and should forward Local (IsLocal of what it wraps).
type Local interface {
	// Local reports whether operations live in this process only.
	Local() bool
}

// IsLocal reports whether b keeps its operations in this process only.
func IsLocal(b Backend) bool {
	l, ok := b.(Local)
	return ok && l.Local()
}

// Lister is an optional interface of a Backend that lists and counts the
// operations it keeps, for a caller's own list of operations and an
// operator's dashboard. Everything else works with a backend that does not
// implement it; only listing is then unavailable. A wrapper that embeds the
// Backend interface hides it, and should forward it.
//
// What is listed and counted is what a client could still poll: an
// operation is left out once it is expired (judged at the query's Now) or
// canceled, whether or not a sweep has removed it yet.
type Lister interface {
	// List returns one page of the operations that match q, newest first:
	// by CreatedAt descending, ties broken by ID descending (bytewise). The
	// page token encodes the (CreatedAt, ID) of the last operation returned,
	// so that paging stays correct while operations are created and swept:
	// an operation created after the first page was read is newer than
	// every cursor, and so listed by a fresh listing only; none older is
	// skipped or repeated; and a token stays valid when the operation it
	// points past has been swept. Listed operations carry no Request or Response bytes:
	// a list loads neither bodies nor credentials. A PageToken that this
	// backend did not return for the same query (same Owner, AnyOwner,
	// Statuses and creation bounds) is refused with ErrBadPageToken.
	List(ctx context.Context, q ListQuery) (ListPage, error)

	// CountByStatus counts the operations that match q, by status. The map
	// has a key for each of NotStarted, Running, Succeeded and Failed, zero
	// included, and never for Canceled.
	CountByStatus(ctx context.Context, q CountQuery) (map[Status]int, error)
}

// Page sizes of ListQuery.
const (
	// DefaultPageSize is the page size of a ListQuery that sets none.
	DefaultPageSize = 50
	// MaxPageSize is the largest page List returns; a larger PageSize is
	// taken as MaxPageSize, so that one call cannot make a backend load an
	// unbounded number of rows.
	MaxPageSize = 1000
)

// ListQuery selects the operations Lister.List returns.
type ListQuery struct {
	// Owner is the owner whose operations are listed, compared exactly: ""
	// lists the operations created without an owner, never those of an
	// owner. Ignored when AnyOwner is set.
	Owner string
	// AnyOwner lists the operations of every owner, as an operator sees
	// them. Defaults to false: only Owner's.
	AnyOwner bool
	// Statuses lists only operations in one of these statuses. Canceled
	// operations are never listed, whatever it says. Defaults to every
	// status.
	Statuses []Status
	// CreatedAfter lists only operations created strictly after it.
	// Defaults to the zero time: no lower bound.
	CreatedAfter time.Time
	// CreatedBefore lists only operations created strictly before it.
	// Defaults to the zero time: no upper bound. Both bounds are compared
	// at the precision the backend keeps (microseconds for a database).
	CreatedBefore time.Time
	// PageSize is the most operations one page holds, at most MaxPageSize
	// (a larger value is taken as MaxPageSize). Defaults to DefaultPageSize
	// when zero or negative.
	PageSize int
	// PageToken is the NextPageToken of the previous page of the same
	// query. Defaults to "": the first page.
	PageToken string
	// Now is when expiry is judged: operations expired at Now are not
	// listed. Required, as every time a backend is given.
	Now time.Time
}

// ListPage is one page of a listing.
type ListPage struct {
	// Operations are newest first, without Request or Response.
	Operations []*Operation
	// NextPageToken is the PageToken of the next page, "" when this page is
	// the last.
	NextPageToken string
}

// CountQuery selects the operations Lister.CountByStatus counts: those of
// Owner (exactly, "" being the operations without an owner) or, with
// AnyOwner, of every owner; neither expired at Now nor canceled.
type CountQuery struct {
	Owner    string
	AnyOwner bool
	Now      time.Time
}

var (
	// ErrNotFound: no operation has that ID (or it has been swept).
	ErrNotFound = errors.New("operation not found")
	// ErrFinished: the operation is already done or canceled.
	ErrFinished = errors.New("operation already finished")
	// ErrUnavailable: the store cannot be reached; nothing was changed.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrCanceled is the cause of an execution context canceled by Cancel.
	ErrCanceled = errors.New("operation canceled")
	// ErrShutdown is the cause of an execution context canceled by Stop.
	ErrShutdown = errors.New("backend shutting down")
	// ErrBadPageToken: a ListQuery's PageToken is malformed, or was
	// returned for another query.
	ErrBadPageToken = errors.New("invalid page token")
)

// Admission control: a backend may bound the operations waiting to run
// (NotStarted), so that a burst of submissions cannot hold more than the
// process or the store can. Past a bound, Create stores nothing and returns
// one of these (wrapped); callers answer that the client may retry later.
// An idempotent retry, which returns an existing operation and stores
// nothing, is never refused.
var (
	// ErrQueueFull: as many operations are waiting to run as the backend
	// holds in total.
	ErrQueueFull = errors.New("too many operations waiting to run")
	// ErrOwnerQueueFull: the operation's Owner has as many operations
	// waiting to run as one owner may. Operations without an Owner are
	// bounded only in total.
	ErrOwnerQueueFull = errors.New("too many operations of this owner waiting to run")
)

// ChangeLister is an optional interface of a Backend that lists operations
// in the order they last changed, for a feed of every change to a caller's
// operations, followed across processes by reading what changed since a
// cursor. A backend that does not implement it has no such feed. A wrapper
// that embeds the Backend interface hides it, and should forward it.
type ChangeLister interface {
	// Changes returns the operations that match q and changed after
	// q.After, in the order of their last change: by UpdatedAt ascending,
	// ties broken by ID ascending (bytewise), at most q.Limit of them. A
	// canceled operation is returned too, as the tombstone Cancel keeps,
	// so that a cancellation is seen; an expired one (judged at q.Now,
	// tombstones included) is not. Operations carry no Request or
	// Response bytes. An After that ParseChangeCursor refuses is refused
	// with ErrBadCursor.
	//
	// Each operation appears at its last change only: one that changed
	// twice since the cursor is returned once, as it is now. UpdatedAt is
	// the time the changing call was given, not the time its transaction
	// committed, so a change may become visible after a later one was
	// read; callers that follow changes re-read a window behind their
	// cursor.
	Changes(ctx context.Context, q ChangeQuery) ([]*Operation, error)
}

// ChangeQuery selects the operations ChangeLister.Changes returns.
type ChangeQuery struct {
	// Owner is the owner whose operations are returned, compared exactly:
	// "" returns the operations created without an owner. Ignored when
	// AnyOwner is set.
	Owner string
	// AnyOwner returns the operations of every owner. Defaults to false:
	// only Owner's.
	AnyOwner bool
	// After is the cursor (ChangeCursor.String) of the last change already
	// seen: only operations whose (UpdatedAt, ID) sorts after it are
	// returned. Defaults to "": from the earliest change kept.
	After string
	// Limit is the most operations returned, at most MaxPageSize (a larger
	// value is taken as MaxPageSize). Defaults to DefaultPageSize when zero
	// or negative.
	Limit int
	// Now is when expiry is judged. Required.
	Now time.Time
}

// ChangeCursor is a position in the order of changes: the (UpdatedAt, ID)
// of an operation's change.
type ChangeCursor struct {
	UpdatedAt time.Time
	ID        string
}

// CursorOf is the cursor of op's last change.
func CursorOf(op *Operation) ChangeCursor {
	return ChangeCursor{UpdatedAt: op.UpdatedAt, ID: op.ID}
}

// String encodes the cursor for ChangeQuery.After and for clients, which
// hand it back to resume: UpdatedAt in unix nanoseconds, base 36, a dot,
// then the ID. The zero cursor, before every change, is "".
func (c ChangeCursor) String() string {
	if c == (ChangeCursor{}) {
		return ""
	}
	return strconv.FormatInt(c.UpdatedAt.UnixNano(), 36) + "." + c.ID
}

// Before reports whether c sorts before d.
func (c ChangeCursor) Before(d ChangeCursor) bool {
	if !c.UpdatedAt.Equal(d.UpdatedAt) {
		return c.UpdatedAt.Before(d.UpdatedAt)
	}
	return c.ID < d.ID
}

// maxCursorID bounds the ID a cursor may carry: operation IDs are short,
// and a cursor is read from clients.
const maxCursorID = 256

// ParseChangeCursor decodes a cursor that ChangeCursor.String encoded. ""
// is the zero cursor, before every change; one with an empty ID is before
// every change at its time. Anything else malformed is refused with
// ErrBadCursor.
func ParseChangeCursor(s string) (ChangeCursor, error) {
	if s == "" {
		return ChangeCursor{}, nil
	}
	nanos, id, ok := strings.Cut(s, ".")
	if !ok || len(id) > maxCursorID {
		return ChangeCursor{}, ErrBadCursor
	}
	n, err := strconv.ParseInt(nanos, 36, 64)
	if err != nil || n < 0 {
		return ChangeCursor{}, ErrBadCursor
	}
	for i := range len(id) {
		if id[i] < 0x21 || id[i] > 0x7e {
			return ChangeCursor{}, ErrBadCursor
		}
	}
	return ChangeCursor{UpdatedAt: time.Unix(0, n).UTC(), ID: id}, nil
}

// ErrBadCursor: a ChangeQuery's After is not a cursor ChangeCursor.String
// encoded.
var ErrBadCursor = errors.New("invalid change cursor")
