package backendurl_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendurl"
	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/testdb"
)

// The bounds in Options reach every backend: a second operation waiting
// is refused with a bound of one, in total or for its owner.
func TestOpenPassesBounds(t *testing.T) {
	t.Parallel()
	pool := testdb.Pool(t, 2)
	postgresURL, err := url.Parse(testdb.URL())
	if err != nil {
		t.Fatal(err)
	}
	q := postgresURL.Query()
	q.Set("schema", testdb.Schema(t, pool))
	postgresURL.RawQuery = q.Encode()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		rawURL  string
		opts    backendurl.Options
		refusal error
	}{
		{"memory:", backendurl.Options{MaxQueued: 1}, backend.ErrQueueFull},
		{"memory:", backendurl.Options{MaxQueuedPerOwner: 1}, backend.ErrOwnerQueueFull},
		{"sqlite://" + filepath.Join(t.TempDir(), "ops.db"), backendurl.Options{MaxQueued: 1}, backend.ErrQueueFull},
		{postgresURL.String(), backendurl.Options{MaxQueuedPerOwner: 1}, backend.ErrOwnerQueueFull},
	} {
		c.opts.Logger = slog.New(slog.DiscardHandler)
		b, err := backendurl.Open(ctx, c.rawURL, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Stop(context.Background()) })
		if _, _, err := b.Create(ctx, ownedOperation("owner")); err != nil {
			t.Fatalf("%s: first Create: %v", c.rawURL, err)
		}
		if _, _, err := b.Create(ctx, ownedOperation("owner")); !errors.Is(err, c.refusal) {
			t.Errorf("%s with %+v: second Create: %v, want an error matching %v", c.rawURL, c.opts, err, c.refusal)
		}
	}
}

// A negative MaxQueued lifts memory:'s default bounds, on the number of
// operations waiting and on their bytes.
func TestOpenMemoryUnbounded(t *testing.T) {
	t.Parallel()
	b, err := backendurl.Open(context.Background(), "memory:", backendurl.Options{MaxQueued: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(context.Background())
	for i := range memory.DefaultMaxQueued + 1 {
		if _, _, err := b.Create(t.Context(), ownedOperation("")); err != nil {
			t.Fatalf("Create %d with no bound: %v", i+1, err)
		}
	}
	large := ownedOperation("")
	large.Request = make([]byte, memory.DefaultMaxQueuedBytes)
	if _, _, err := b.Create(t.Context(), large); err != nil {
		t.Fatalf("Create of %d MiB with others waiting and no bound: %v", memory.DefaultMaxQueuedBytes>>20, err)
	}
}

func ownedOperation(owner string) *backend.Operation {
	return &backend.Operation{ID: rand.Text(), Owner: owner, Request: []byte("request"), Retention: time.Hour, CreatedAt: time.Now()}
}
