package main

import (
	"strings"
	"testing"
	"time"
)

// A report of wrk 4.1 (Debian's) with --latency, errors included.
const wrkReport = `Running 5s test @ http://127.0.0.1:40000/fast
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.59ms    2.04ms  45.21ms   91.35%
    Req/Sec    23.25k     2.71k   29.10k    70.00%
  Latency Distribution
     50%  846.00us
     75%    1.73ms
     90%    3.46ms
     99%   10.41ms
  231370 requests in 5.00s, 33.32MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  46259.57
Transfer/sec:      6.66MB
`

func TestParseWrk(t *testing.T) {
	res, err := parseWrk(wrkReport)
	if err != nil {
		t.Fatal(err)
	}
	if res.requests != 231370 || res.elapsed != 5*time.Second || res.throughput != 46259.57 {
		t.Errorf("requests %d in %v at %v/s, want 231370 in 5s at 46259.57/s", res.requests, res.elapsed, res.throughput)
	}
	want := map[float64]time.Duration{0.5: 846 * time.Microsecond, 0.75: 1730 * time.Microsecond, 0.9: 3460 * time.Microsecond, 0.99: 10410 * time.Microsecond}
	for q, d := range want {
		if got := res.latency[q]; got.Round(time.Microsecond) != d {
			t.Errorf("p%v = %v, want %v", q*100, got, d)
		}
	}
	if res.max.Round(time.Microsecond) != 45210*time.Microsecond {
		t.Errorf("max %v, want 45.21ms", res.max)
	}
	if res.socketErrs["read"] != 2 || res.socketErrs["timeout"] != 1 || res.non2xx3xx != 12 {
		t.Errorf("socket errors %v, non-2xx/3xx %d", res.socketErrs, res.non2xx3xx)
	}
	err = res.failure()
	for _, want := range []string{"2 socket errors (read)", "1 socket errors (timeout)", "12 of 231370 answers with a status of 400 or more"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("failure() = %v, want it to say %q", err, want)
		}
	}
}

// A clean run is no failure; a report missing what the harness needs is
// an error, not zeros.
func TestParseWrkIncomplete(t *testing.T) {
	clean := strings.NewReplacer("  Socket errors: connect 0, read 2, write 0, timeout 1\n", "", "  Non-2xx or 3xx responses: 12\n", "").Replace(wrkReport)
	res, err := parseWrk(clean)
	if err != nil || res.failure() != nil {
		t.Errorf("a clean report: %v, failure %v", err, res.failure())
	}
	for _, cut := range []string{"Requests/sec:  46259.57\n", "  231370 requests in 5.00s, 33.32MB read\n", "     99%   10.41ms\n"} {
		if _, err := parseWrk(strings.Replace(clean, cut, "", 1)); err == nil {
			t.Errorf("a report without %q parsed", strings.TrimSpace(cut))
		}
	}
	if _, err := parseWrk(strings.Replace(clean, "846.00us", "846.00", 1)); err == nil {
		t.Error("a latency without a unit parsed")
	}
}

func TestWrkScript(t *testing.T) {
	got := wrkRequest{method: "POST", body: "{\"a\":\"\\\n\"}", header: map[string]string{"Prefer": "respond-async"}}.script()
	want := "wrk.method = \"POST\"\nwrk.body = \"{\\034a\\034:\\034\\092\\010\\034}\"\nwrk.headers[\"Prefer\"] = \"respond-async\"\n"
	if got != want {
		t.Errorf("script:\n%s\nwant:\n%s", got, want)
	}
}
