package sqlite_test

import (
	"testing"

	"github.com/asyncreply/asyncreply/backend/memory"
	"github.com/asyncreply/asyncreply/internal/benchutil"
)

// BenchmarkAccept measures accepting on SQLite over loopback HTTP, beside
// the in-memory backend as the baseline of a store that costs nothing.
// "accept-only" executes nothing meanwhile; "with-execution" replays every
// operation and stores its response on the same file.
//
//	go test -run '^$' -bench Accept -benchtime 5s ./backend/sqlite/
func BenchmarkAccept(b *testing.B) {
	b.Run("accept-only/baseline=memory", func(b *testing.B) {
		// Unbounded: executing nothing, the operations only pile up.
		unbounded := memory.New(memory.Config{MaxQueued: -1, MaxQueuedBytes: -1})
		benchutil.RunAccept(b, benchutil.App(b, benchutil.AcceptOnly{Backend: unbounded}))
	})
	b.Run("accept-only/sqlite", func(b *testing.B) {
		benchutil.RunAccept(b, benchutil.App(b, benchutil.AcceptOnly{Backend: newBackend(b, newPath(b))}))
	})
	b.Run("with-execution/baseline=memory", func(b *testing.B) {
		benchutil.RunAccept(b, benchutil.App(b, memory.New(memory.Config{})))
	})
	b.Run("with-execution/sqlite", func(b *testing.B) {
		benchutil.RunAccept(b, benchutil.App(b, newBackend(b, newPath(b))))
	})
}

// BenchmarkNotificationLatency reports the p50 and p99 of the time from the
// start of Complete to a watcher's wake-up: in the same process (at once),
// and in another process on the same file (at its next poll).
func BenchmarkNotificationLatency(b *testing.B) {
	b.Run("same-process", func(b *testing.B) {
		be := newBackend(b, newPath(b))
		benchutil.NotificationLatency(b, be, be)
	})
	b.Run("other-process", func(b *testing.B) {
		path := newPath(b)
		benchutil.NotificationLatency(b, newBackend(b, path), newBackend(b, path))
	})
}
