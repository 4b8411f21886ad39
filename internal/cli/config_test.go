package cli

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/gateway"
)

const sampleConfig = `# the gateway in front of a Rails app
upstream: http://127.0.0.1:3000
owner: upstream:/whoami
wait: 2s
trusted-proxy: [10.0.0.0/8, 192.168.0.0/16]
async:
  - GET /reports/{id}
  - pattern: POST /exports
    timeout: 1h
    retention: 168h
    wait: 5s
`

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "asyncreply.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func routes(patterns ...string) []gateway.Route {
	r := make([]gateway.Route, len(patterns))
	for i, p := range patterns {
		r[i].Pattern = p
	}
	return r
}

func TestConfigFile(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, sampleConfig)

	o, err := parseGateway([]string{"--config", path}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []gateway.Route{
		{Pattern: "GET /reports/{id}"},
		{Pattern: "POST /exports", Wait: 5 * time.Second, Timeout: time.Hour, Retention: 168 * time.Hour},
	}
	if !reflect.DeepEqual(o.async.values, want) {
		t.Errorf("async = %+v\nwant     %+v", o.async.values, want)
	}
	if o.upstream != "http://127.0.0.1:3000" || o.owner != "upstream:/whoami" || o.wait != 2*time.Second || len(o.trustedProxies.values) != 2 {
		t.Errorf("settings from the file: %+v", o)
	}
	if o.listen != "127.0.0.1:8080" {
		t.Errorf("listen = %q, want the default where the file says nothing", o.listen)
	}

	t.Run("environment over file, command line over both", func(t *testing.T) {
		vars := map[string]string{"ASYNCREPLY_CONFIG": path, "ASYNCREPLY_WAIT": "3s", "ASYNCREPLY_OWNER": "issue-cookie"}
		o, err := parseGateway([]string{"--owner", "header:Authorization", "--async", "GET /slow"}, env(vars), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if o.wait != 3*time.Second || o.owner != "header:Authorization" || o.upstream != "http://127.0.0.1:3000" {
			t.Errorf("wait %s owner %q upstream %q: want the environment's wait, the command line's owner, the file's upstream", o.wait, o.owner, o.upstream)
		}
		if !reflect.DeepEqual(o.async.values, routes("GET /slow")) {
			t.Errorf("async = %+v: the command line's list replaces the file's", o.async.values)
		}
	})

	t.Run("found after flags with values of their own", func(t *testing.T) {
		o, err := parseGateway([]string{"--inline", "--upstream", "http://127.0.0.1:4000", "--config", path}, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if o.owner != "upstream:/whoami" || o.upstream != "http://127.0.0.1:4000" || !o.inline {
			t.Errorf("owner %q upstream %q inline %t: want the file's owner, the command line's upstream and inline", o.owner, o.upstream, o.inline)
		}
	})

	t.Run("a worker reads the same file", func(t *testing.T) {
		o, err := parseWorker([]string{"--config=" + path}, env(nil), io.Discard)
		if err != nil {
			t.Fatalf("the gateway's file is refused by the worker: %v", err)
		}
		if o.upstream != "http://127.0.0.1:3000" {
			t.Errorf("worker upstream = %q", o.upstream)
		}
	})
}

func TestConfigFileRouteOptionsReachTheGateway(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "upstream: http://127.0.0.1:3000\nbackend: 'memory:'\nasync:\n  - pattern: GET /x\n    timeout: -1s\n")
	var stdout, stderr strings.Builder
	if code := Run(t.Context(), []string{"gateway", "--config", path}, env(nil), &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2 for a negative route timeout; stderr: %s", code, stderr.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, "--async") || !strings.Contains(msg, `route "GET /x": timeout must not be negative`) {
		t.Errorf("stderr %q should name --async, the route and its timeout", msg)
	}
}

func TestBadConfigFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"unknown setting", "upstream: http://127.0.0.1:3000\nupstreem: x\n", []string{":2:", "upstreem", "unknown setting"}},
		{"bad duration", "upstream: http://127.0.0.1:3000\nwait: soon\n", []string{":2:", "wait", "soon"}},
		{"list for a single value", "upstream: [a, b]\n", []string{":1:", "upstream", "one value"}},
		{"unknown route setting", "async:\n  - pattern: GET /x\n    timout: 1s\n", []string{"async", `"timout"`, "pattern, wait, timeout, retention and notify"}},
		{"route without pattern", "async:\n  - timeout: 1s\n", []string{"async", "needs a pattern"}},
		{"route duration", "async:\n  - pattern: GET /x\n    retention: a week\n", []string{"retention", `"a week"`}},
		{"not a mapping", "- upstream\n", []string{":1:", "mapping"}},
		{"malformed yaml", "upstream: [\n", []string{"--config"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr strings.Builder
			code := Run(t.Context(), []string{"gateway", "--config", writeConfig(t, tc.text)}, env(nil), &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr: %s", code, stderr.String())
			}
			for _, want := range tc.want {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr %q does not mention %q", stderr.String(), want)
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		var stdout, stderr strings.Builder
		missing := filepath.Join(t.TempDir(), "nope.yaml")
		if code := Run(t.Context(), []string{"gateway", "--config", missing}, env(nil), &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "--config") {
			t.Errorf("exit %d, stderr %q: want 2 naming --config", code, stderr.String())
		}
	})
}

// TestReadmeConfigFiles parses every YAML example of the README, so that
// the documentation cannot drift from what the command accepts.
func TestReadmeConfigFiles(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("the README has no yaml examples")
	}
	for i, block := range blocks {
		path := writeConfig(t, string(block[1]))
		o, err := parseGateway([]string{"--config", path, "--upstream", "http://127.0.0.1:3000"}, env(nil), io.Discard)
		if err != nil {
			t.Errorf("README yaml example %d: %v", i+1, err)
			continue
		}
		if _, err := gatewayConfig(o, nil); err != nil {
			t.Errorf("README yaml example %d: %v", i+1, err)
		}
	}
}

// asyncFlag is the --async flag holding patterns.
func asyncFlag(patterns ...string) routeList {
	return routeList{list[gateway.Route]{values: routes(patterns...)}}
}
