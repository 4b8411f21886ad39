package cli

import (
	"encoding/base64"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply/gateway"
)

func testWebhookSecret(seed byte) string {
	key := make([]byte, 32)
	for i := range key {
		key[i] = seed + byte(i)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

func TestWebhookFlags(t *testing.T) {
	t.Parallel()
	a, b := testWebhookSecret(1), testWebhookSecret(2)
	vars := map[string]string{"ASYNCREPLY_WEBHOOK_SECRET": a + ", " + b}
	o, err := parseGateway([]string{"--upstream", "http://127.0.0.1:3000",
		"--callback-allow", "hooks.example.com", "--callback-allow", "ci.example.com:8443",
		"--webhook-allow-network", "10.0.0.0/8", "--notify", "https://ops.example.com/hook", "--webhook-retry", "2s"}, env(vars), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.notify.config()
	if !reflect.DeepEqual(cfg.Secrets, []string{a, b}) {
		t.Errorf("secrets from ASYNCREPLY_WEBHOOK_SECRET = %d, want both, in order", len(cfg.Secrets))
	}
	if !reflect.DeepEqual(cfg.CallbackHosts, []string{"hooks.example.com", "ci.example.com:8443"}) || len(cfg.AllowNetworks) != 1 ||
		cfg.URL != "https://ops.example.com/hook" || cfg.RetryDelay.String() != "2s" {
		t.Errorf("notify config = %+v", cfg)
	}
	if s := o.notify.secrets.String(); strings.Contains(s, "whsec") {
		t.Errorf("the secrets flag prints as %q", s)
	}
}

func TestConfigFileRouteNotify(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, `upstream: http://127.0.0.1:3000
async:
  - pattern: POST /exports
    notify: https://ops.example.com/exports
`)
	o, err := parseGateway([]string{"--config", path}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []gateway.Route{{Pattern: "POST /exports", Notify: "https://ops.example.com/exports"}}; !reflect.DeepEqual(o.async.values, want) {
		t.Errorf("async = %+v, want %+v", o.async.values, want)
	}
}

func TestBadWebhookConfigurationNamesTheFlag(t *testing.T) {
	t.Parallel()
	up := []string{"gateway", "--upstream", "http://127.0.0.1:3000", "--backend", "memory:"}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"bad secret", append(up, "--webhook-secret", "hunter2"), []string{"--webhook-secret", "whsec_"}},
		{"callbacks without a secret", append(up, "--callback-allow", "hooks.example.com"), []string{"--callback-allow", "Secrets"}},
		{"notify without a secret", append(up, "--notify", "https://ops.example.com/"), []string{"--notify", "Secrets"}},
		{"bad notify URL", append(up, "--webhook-secret", testWebhookSecret(1), "--notify", "ops.example.com"), []string{"--notify", "absolute"}},
		{"bad allowed network", append(up, "--webhook-allow-network", "10.0.0.0/99"), []string{"-webhook-allow-network"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr strings.Builder
			if code := Run(t.Context(), tc.args, env(nil), &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2; stderr: %s", code, stderr.String())
			}
			for _, want := range tc.want {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr %q does not mention %q", stderr.String(), want)
				}
			}
			if strings.Contains(stderr.String(), "hunter2") {
				t.Errorf("stderr %q shows the secret", stderr.String())
			}
		})
	}
}

func TestPublishFlag(t *testing.T) {
	t.Parallel()
	t.Run("names carry no credentials", func(t *testing.T) {
		t.Parallel()
		for raw, want := range map[string]string{
			"amqp://guest:secret@127.0.0.1:5672/events?routing_key=done": "amqp://127.0.0.1:5672/events?routing_key=done",
			"nats://token@127.0.0.1:4222/ops.done":                       "nats://127.0.0.1:4222/ops.done",
		} {
			if got := publisherName(raw); got != want {
				t.Errorf("publisherName(%q) = %q, want %q", raw, got, want)
			}
		}
	})
	t.Run("an unreachable broker fails at start, without its password", func(t *testing.T) {
		t.Parallel()
		o, err := parseGateway([]string{"--upstream", "http://127.0.0.1:3000", "--backend", "memory:",
			"--publish", "amqp://guest:hunter2@127.0.0.1:1/events"}, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		_, err = newGateway(t.Context(), o, slog.New(slog.DiscardHandler))
		if err == nil || !strings.HasPrefix(err.Error(), "--publish: ") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("newGateway with an unreachable broker = %v, want a --publish error without the password", err)
		}
		if len(o.notify.opened) != 0 {
			t.Errorf("%d publishers left open after the failure", len(o.notify.opened))
		}
	})
}
