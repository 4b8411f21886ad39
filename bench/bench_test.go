package main

import (
	"context"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply/internal/testdb"
)

// TestMain fails the run if the harness leaves a goroutine behind: every
// scenario stops its servers, backends and clients.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestSmoke runs every scenario tiny, as go run ./bench -smoke does, so
// that the harness cannot rot: every scenario must run, every request
// succeed, every operation complete (and, where deliveries are
// configured, be delivered), and every number be positive. It
// asserts no timing: these sizes measure nothing.
func TestSmoke(t *testing.T) {
	opts := smokeOptions()
	opts.postgres = testdb.URL()
	if err := ping(t.Context(), opts.postgres); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL is required in CI and unreachable at %s: %v", opts.postgres, err)
		}
		t.Logf("PostgreSQL unreachable at %s (%v): its scenarios are left out; set TEST_DATABASE_URL to run them", opts.postgres, err)
		opts.postgres = ""
	}
	opts.nats = defaultNATS()
	if err := pingNATS(opts.nats); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("NATS is required in CI and unreachable at %s: %v", opts.nats, err)
		}
		t.Logf("NATS unreachable at %s (%v): notify-cost measures webhooks only; set NATS_URL to publish too", opts.nats, err)
		opts.nats = ""
	}
	var progress strings.Builder
	sections, generated, err := run(t.Context(), opts, "go test ./bench", &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	t.Log(progress.String())
	if len(sections) != len(scenarios) {
		t.Fatalf("%d sections, want one per scenario (%d)", len(sections), len(scenarios))
	}
	for _, s := range sections {
		if len(s.tables) == 0 {
			t.Errorf("%s: no table", s.title)
		}
		for _, tbl := range s.tables {
			if len(tbl.rows) == 0 {
				t.Errorf("%s: an empty table", s.title)
			}
			for _, r := range tbl.runs {
				if r.Requests == 0 || r.Errors != 0 || !positive(r.Throughput()) || r.Latency.Max() <= 0 {
					t.Errorf("%s: %s (%s): %d requests, %d errors, %.0f/s, max %v", s.title, r.target, r.loop, r.Requests, r.Errors, r.Throughput(), r.Latency.Max())
				}
			}
		}
		for _, g := range s.goals {
			if !positive(g.value) {
				t.Errorf("%s: goal %q measured %v, want a positive number", s.title, g.what, g.value)
			}
		}
		for name, v := range s.measures {
			if !positive(v) {
				t.Errorf("%s: %s = %v, want a positive number", s.title, name, v)
			}
		}
		if !strings.Contains(string(generated), s.title) {
			t.Errorf("the results lack section %q", s.title)
		}
	}
	if opts.postgres != "" && !strings.Contains(string(generated), "River by hand") {
		t.Error("PostgreSQL was reachable, and the results lack its baseline")
	}
	if opts.nats != "" && (!strings.Contains(string(generated), "| NATS JetStream |") || strings.Contains(string(generated), "webhooks only")) {
		t.Error("NATS was reachable, and the results lack the stream's deliveries")
	}
}

func pingNATS(url string) error {
	conn, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return err
	}
	conn.Close()
	return nil
}

func positive(v float64) bool { return v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) }

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
