package asyncreply_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/memory"
)

// durableStandIn says its operations outlive the process, as SQLite and
// PostgreSQL do: what it stores deserves encryption, and other processes
// may execute it.
type durableStandIn struct{ *memory.Backend }

func (durableStandIn) Local() bool { return false }

// wrapped is a backend wrapping another, as a metrics or tracing layer
// would: it is what it wraps.
type wrapped struct{ *memory.Backend }

func TestWarnsWhenDurableBackendHasNoKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		cfg      asyncreply.Config
		wantWarn bool
	}{
		{"memory without key", asyncreply.Config{}, false},
		{"wrapped memory without key", asyncreply.Config{Backend: wrapped{memory.New(memory.Config{})}}, false},
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

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cfg   asyncreply.Config
		field string
	}{
		{"prefix without slashes", asyncreply.Config{Prefix: "operations"}, "Prefix"},
		{"prefix without trailing slash", asyncreply.Config{Prefix: "/operations"}, "Prefix"},
		{"prefix is the root", asyncreply.Config{Prefix: "/"}, "Prefix"},
		{"16-byte key", asyncreply.Config{Key: make([]byte, 16)}, "Key"},
		{"negative Wait", asyncreply.Config{Wait: -time.Second}, "Wait"},
		{"negative MaxWait", asyncreply.Config{MaxWait: -time.Second}, "MaxWait"},
		{"negative RetryAfter", asyncreply.Config{RetryAfter: -time.Second}, "RetryAfter"},
		{"negative Retention", asyncreply.Config{Retention: -time.Hour}, "Retention"},
		{"negative Timeout", asyncreply.Config{Timeout: -time.Minute}, "Timeout"},
		{"negative SweepInterval", asyncreply.Config{SweepInterval: -time.Minute}, "SweepInterval"},
		{"negative MaxRequestBytes", asyncreply.Config{MaxRequestBytes: -1}, "MaxRequestBytes"},
		{"negative MaxResponseBytes", asyncreply.Config{MaxResponseBytes: -1}, "MaxResponseBytes"},
		{"PublicURL without scheme", asyncreply.Config{PublicURL: "api.example.com"}, "PublicURL"},
		{"PublicURL not http", asyncreply.Config{PublicURL: "ftp://api.example.com"}, "PublicURL"},
		{"PublicURL without host", asyncreply.Config{PublicURL: "https://"}, "PublicURL"},
		{"PublicURL unparsable", asyncreply.Config{PublicURL: "http://[::1"}, "PublicURL"},
		{"AcceptOnly in memory", asyncreply.Config{AcceptOnly: true}, "AcceptOnly"},
		{"AcceptOnly in wrapped memory", asyncreply.Config{AcceptOnly: true, Backend: wrapped{memory.New(memory.Config{})}}, "AcceptOnly"},
		{"AcceptOnly and Inline", asyncreply.Config{AcceptOnly: true, Inline: true, Backend: durableStandIn{memory.New(memory.Config{})}}, "AcceptOnly"},
		{"negative MaxWatches", asyncreply.Config{MaxWatches: -1}, "MaxWatches"},
		{"negative MaxWatchesPerOwner", asyncreply.Config{MaxWatchesPerOwner: -1}, "MaxWatchesPerOwner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ar, err := asyncreply.New(tc.cfg)
			if err == nil || ar != nil {
				t.Fatalf("New = %v, %v; want an error", ar, err)
			}
			var ce *asyncreply.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(err.Error(), "Config."+tc.field+": ") {
				t.Errorf("error %q: want a *ConfigError naming the field %s", err, tc.field)
			}
			if verr := tc.cfg.Validate(); verr == nil || verr.Error() != err.Error() {
				t.Errorf("Validate = %v, want New's error %v", verr, err)
			}
		})
	}

	t.Run("valid", func(t *testing.T) {
		t.Parallel()
		for _, cfg := range []asyncreply.Config{
			{},
			{Prefix: "/jobs/", Key: make([]byte, 32), PublicURL: "https://api.example.com/base/", Wait: time.Second},
		} {
			if _, err := asyncreply.New(cfg); err != nil || cfg.Validate() != nil {
				t.Errorf("New(%+v) = %v, Validate = %v", cfg, err, cfg.Validate())
			}
		}
	})
}
