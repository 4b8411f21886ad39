package asyncreply_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/memory"
)

// durableStandIn is any backend other than the in-memory one: what it
// stores outlives the process, so stored credentials deserve encryption.
type durableStandIn struct{ *memory.Backend }

func TestWarnsWhenDurableBackendHasNoKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		cfg      asyncreply.Config
		wantWarn bool
	}{
		{"memory without key", asyncreply.Config{}, false},
		{"durable without key", asyncreply.Config{Backend: durableStandIn{memory.New(memory.Config{})}}, true},
		{"durable with key", asyncreply.Config{Backend: durableStandIn{memory.New(memory.Config{})}, Key: bytes.Repeat([]byte{1}, 32)}, false},
	} {
		var logs bytes.Buffer
		tc.cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		if _, err := asyncreply.New(tc.cfg); err != nil {
			t.Fatal(err)
		}
		if warned := strings.Contains(logs.String(), "unencrypted"); warned != tc.wantWarn {
			t.Errorf("%s: warned = %v, want %v; logs: %s", tc.name, warned, tc.wantWarn, logs.String())
		}
	}
}
