package listing

import (
	"fmt"

	"github.com/asyncreply/asyncreply/backend"
)

// ChangeLimit is the number of operations a ChangeQuery returns at most.
func ChangeLimit(q backend.ChangeQuery) int {
	if q.Limit <= 0 {
		return backend.DefaultPageSize
	}
	return min(q.Limit, backend.MaxPageSize)
}

// ChangeCursor decodes q.After; the error wraps backend.ErrBadCursor.
func ChangeCursor(q backend.ChangeQuery) (backend.ChangeCursor, error) {
	c, err := backend.ParseChangeCursor(q.After)
	if err != nil {
		return c, fmt.Errorf("listing: %q: %w", q.After, err)
	}
	return c, nil
}
