// Package testwait bounds a test's waits for the signals of the code under
// test, so that code that never signals fails the test with a message saying
// what it was waiting for, instead of hanging the run.
package testwait

import (
	"testing"
	"time"
)

// Timeout bounds every wait. It is generous because a durable backend may
// poll its store, and the race detector and a busy machine slow everything
// down; a wait that passes it is a bug, not a slow run.
const Timeout = 10 * time.Second

// Recv waits for a value from ch and returns it, failing t if none comes
// within Timeout. what names the awaited event in the failure message.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return RecvWithin(t, ch, Timeout, what)
}

// RecvWithin is Recv bounded by limit instead of Timeout, for a signal that
// may rightly come later: one that waits for a process to restart, or for a
// periodic sweep of the code under test.
func RecvWithin[T any](t testing.TB, ch <-chan T, limit time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %s waiting for %s", limit, what)
		var zero T
		return zero
	}
}
