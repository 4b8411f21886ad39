package backendtest_test

import (
	"testing"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/backend/backendtest"
	"github.com/asyncreply/asyncreply/backend/memory"
)

// A backend passes the conformance suite from one test function in its own
// package. The factory makes a fresh, empty backend for each rule: a new
// schema, a new file, or, as here, a new in-memory store. The suite starts
// and stops it as each rule needs.
func ExampleRun() {
	// In the backend's package, e.g. mybackend_test.go:
	//
	//	func TestConformance(t *testing.T) {
	//		backendtest.Run(t, newBackend)
	//	}
	newBackend := func(t *testing.T) backend.Backend {
		return memory.New(memory.Config{})
	}
	var t *testing.T // the TestConformance function's
	if t != nil {
		backendtest.Run(t, newBackend)
	}
}
