package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/asyncreply/asyncreply/internal/testdb"
)

// TestSmokeOutOfProcess runs the out-of-process mode tiny, as go run
// ./bench -mode outproc -smoke does: the binaries must build, every server
// process start and answer its health check, every wrk run be answered
// without a socket error or an error status, every accepted operation be
// executed and, where deliveries are configured, delivered, and every
// number be positive. It needs wrk, which CI installs
// (make deps); elsewhere it is skipped without it. It asserts no timing.
func TestSmokeOutOfProcess(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("wrk is required in CI (make deps installs it) and is not on PATH: %v", err)
		}
		t.Skipf("wrk is not installed (%v): apt-get install wrk to run the out-of-process smoke test", err)
	}
	opts := outprocSmoke()
	opts.postgres = testdb.URL()
	if err := ping(t.Context(), opts.postgres); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL is required in CI and unreachable at %s: %v", opts.postgres, err)
		}
		t.Logf("PostgreSQL unreachable at %s (%v): its comparison is left out", opts.postgres, err)
		opts.postgres = ""
	}
	opts.nats = defaultNATS()
	if err := pingNATS(opts.nats); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("NATS is required in CI and unreachable at %s: %v", opts.nats, err)
		}
		t.Logf("NATS unreachable at %s (%v): notify-cost measures webhooks only", opts.nats, err)
		opts.nats = ""
	}
	var progress strings.Builder
	sections, generated, err := runOutproc(t.Context(), opts, outScenarioNames(), "go test ./bench", &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	t.Log(progress.String())
	if len(sections) != len(outScenarios) {
		t.Fatalf("%d sections, want one per scenario (%d)", len(sections), len(outScenarios))
	}
	for _, s := range sections {
		if len(s.tables) == 0 {
			t.Errorf("%s: no table", s.title)
		}
		runs := 0
		for _, tbl := range s.tables {
			// A table of wrk runs, or of what they were followed by.
			if len(tbl.rows) == 0 {
				t.Errorf("%s: an empty table", s.title)
			}
			runs += len(tbl.outRuns)
			for _, r := range tbl.outRuns {
				if r.requests == 0 || !positive(r.throughput) || r.latency[0.5] <= 0 || r.latency[0.99] < r.latency[0.5] || r.max <= 0 {
					t.Errorf("%s: a run of %d requests at %.0f/s, p50 %v, p99 %v, max %v", s.title, r.requests, r.throughput, r.latency[0.5], r.latency[0.99], r.max)
				}
			}
		}
		if runs == 0 {
			t.Errorf("%s: no wrk run", s.title)
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
		if !strings.Contains(string(generated), "### "+s.title) {
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

// Each mode replaces its own part of the results file and keeps the
// other's and the hand-written sections: the out-of-process part goes
// before the Go benchmarks the first time, and in its own place after that.
func TestWriteOutResults(t *testing.T) {
	path := t.TempDir() + "/RESULTS.md"
	inprocess := beginMarker + "\nin-process tables\n" + endMarker + "\n"
	if err := os.WriteFile(path, []byte("# Results\n\n"+inprocess+"\n### Run to run\n\n## Go benchmarks\n\ntheirs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"first", "second"} {
		if err := writeOutResults(path, []byte(outBeginMarker+"\n"+part+" out-of-process tables\n"+outEndMarker+"\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeResults(path, []byte(beginMarker+"\nnew in-process tables\n"+endMarker+"\n")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "# Results\n\n" + beginMarker + "\nnew in-process tables\n" + endMarker + "\n\n### Run to run\n\n" +
		outBeginMarker + "\nsecond out-of-process tables\n" + outEndMarker + "\n\n## Go benchmarks\n\ntheirs\n"
	if string(got) != want {
		t.Errorf("the results file:\n%s\nwant:\n%s", got, want)
	}
}
