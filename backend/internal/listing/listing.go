// Package listing holds what every backend's Lister shares: the page size a
// query asks for, the statuses it lists, and the page token, an opaque
// cursor on (CreatedAt, ID) bound to the query it was returned for.
package listing

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// Cursor is where a page ended: the last operation it returned. The next
// page lists what sorts after it, newest first: created earlier, or at the
// same time with a smaller ID.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// Before reports whether an operation created at createdAt with the given ID
// sorts after the cursor, and so belongs to a later page.
func (c Cursor) Before(createdAt time.Time, id string) bool {
	if !createdAt.Equal(c.CreatedAt) {
		return createdAt.Before(c.CreatedAt)
	}
	return id < c.ID
}

// PageSize is the number of operations a page of q holds.
func PageSize(q backend.ListQuery) int {
	if q.PageSize <= 0 {
		return backend.DefaultPageSize
	}
	return min(q.PageSize, backend.MaxPageSize)
}

// listable are the statuses a listing may show: every status but Canceled.
var listable = []backend.Status{backend.NotStarted, backend.Running, backend.Succeeded, backend.Failed}

// Statuses returns the statuses q lists, without duplicates and never
// Canceled. It is empty only when q asks solely for statuses that are never
// listed, so that the page is empty.
func Statuses(q backend.ListQuery) []backend.Status {
	if len(q.Statuses) == 0 {
		return slices.Clone(listable)
	}
	var statuses []backend.Status
	for _, s := range listable {
		if slices.Contains(q.Statuses, s) {
			statuses = append(statuses, s)
		}
	}
	return statuses
}

// Counts returns a count of zero for every listable status, which a
// backend's CountByStatus fills in.
func Counts() map[backend.Status]int {
	counts := make(map[backend.Status]int, len(listable))
	for _, s := range listable {
		counts[s] = 0
	}
	return counts
}

// tokenVersion is the first byte of every token, so that a later encoding
// can tell its tokens from these.
const tokenVersion = 1

// checksumSize is how much of a token's checksum it carries: enough that a
// token truncated, altered, or reused for another query is refused rather
// than taken for another cursor.
const checksumSize = 8

// A token is, in base64url: the version, the checksum, the cursor's
// CreatedAt in unix nanoseconds, then its ID.
const tokenHeaderSize = 1 + checksumSize + 8

// DecodeToken returns the cursor q.PageToken holds, and ok = false when the
// token is empty (the first page). It returns backend.ErrBadPageToken when
// the token is malformed or was returned for another query.
func DecodeToken(q backend.ListQuery) (c Cursor, ok bool, err error) {
	if q.PageToken == "" {
		return Cursor{}, false, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(q.PageToken)
	if err != nil || len(raw) < tokenHeaderSize || raw[0] != tokenVersion {
		return Cursor{}, false, fmt.Errorf("listing: malformed token: %w", backend.ErrBadPageToken)
	}
	nanos := int64(binary.BigEndian.Uint64(raw[1+checksumSize:]))
	c = Cursor{CreatedAt: time.Unix(0, nanos).UTC(), ID: string(raw[tokenHeaderSize:])}
	if !bytes.Equal(raw[1:1+checksumSize], checksum(q, c)) {
		return Cursor{}, false, fmt.Errorf("listing: token altered or of another query: %w", backend.ErrBadPageToken)
	}
	return c, true, nil
}

// encodeToken returns the token of the page of q that ends at c.
func encodeToken(q backend.ListQuery, c Cursor) string {
	raw := []byte{tokenVersion}
	raw = append(raw, checksum(q, c)...)
	raw = binary.BigEndian.AppendUint64(raw, uint64(c.CreatedAt.UnixNano()))
	raw = append(raw, c.ID...)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// checksum digests c with what selects the operations of q, but neither
// the page size, which a client may change between pages, nor Now. It is no
// secret: a client that forges a token lists no more than its query allows.
func checksum(q backend.ListQuery, c Cursor) []byte {
	h := sha256.New()
	field := func(s string) {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(s))))
		h.Write([]byte(s))
	}
	if q.AnyOwner {
		field("any owner")
	} else {
		field("owner")
		field(q.Owner)
	}
	for _, s := range Statuses(q) {
		field(string(s))
	}
	field(q.CreatedAfter.UTC().Format(time.RFC3339Nano))
	field(q.CreatedBefore.UTC().Format(time.RFC3339Nano))
	field(c.CreatedAt.UTC().Format(time.RFC3339Nano))
	field(c.ID)
	return h.Sum(nil)[:checksumSize]
}

// Page makes the page of q from the operations a backend read, newest
// first: at most PageSize(q) plus one, the one more telling that another
// page follows. It drops their Request and Response.
func Page(q backend.ListQuery, ops []*backend.Operation) backend.ListPage {
	size := PageSize(q)
	var page backend.ListPage
	if len(ops) > size {
		ops = ops[:size]
		last := ops[size-1]
		page.NextPageToken = encodeToken(q, Cursor{CreatedAt: last.CreatedAt, ID: last.ID})
	}
	for _, op := range ops {
		op.Request, op.Response = nil, nil
	}
	page.Operations = ops
	return page
}
