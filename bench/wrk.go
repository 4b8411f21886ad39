package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// wrk's settings in the out-of-process mode: what a user reproducing the
// numbers would type.
const (
	wrkThreads     = 2
	wrkConnections = 64
	// wrkTimeout is a request's longest wait before wrk counts it as a
	// timeout, which fails the run: longer than any the scenarios meet.
	wrkTimeout = 10 * time.Second
)

// wrkLoad describes the load of wrk's runs.
var wrkLoad = fmt.Sprintf("wrk, %d threads, %d connections", wrkThreads, wrkConnections)

// ensureWrk returns the path of wrk, installing Debian's package when it is
// missing, and saying so on progress.
func ensureWrk(ctx context.Context, progress io.Writer) (string, error) {
	if path, err := exec.LookPath("wrk"); err == nil {
		return path, nil
	}
	fmt.Fprintln(progress, "bench: wrk is missing; installing it: apt-get update && apt-get install -y wrk")
	install := exec.CommandContext(ctx, "sh", "-c", "apt-get update && apt-get install -y --no-install-recommends wrk")
	install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	install.Stdout, install.Stderr = progress, progress
	if err := install.Run(); err != nil {
		return "", fmt.Errorf("wrk is not installed, and installing it with apt-get failed (%v): install wrk (Debian and Ubuntu: apt-get install wrk) and run again", err)
	}
	path, err := exec.LookPath("wrk")
	if err != nil {
		return "", fmt.Errorf("apt-get installed wrk, and it is still not on PATH: %w", err)
	}
	return path, nil
}

// wrkRequest is the request wrk sends over and over.
type wrkRequest struct {
	method string // defaults to GET
	url    string
	header map[string]string
	body   string
}

// script is the Lua script setting wrk's request: its method, headers and
// body. wrk sends the same request every time, and no Lua runs per request.
func (r wrkRequest) script() string {
	var b strings.Builder
	fmt.Fprintf(&b, "wrk.method = %s\n", luaString(cmp.Or(r.method, "GET")))
	if r.body != "" {
		fmt.Fprintf(&b, "wrk.body = %s\n", luaString(r.body))
	}
	for k, v := range r.header {
		fmt.Fprintf(&b, "wrk.headers[%s] = %s\n", luaString(k), luaString(v))
	}
	return b.String()
}

// luaString quotes s as a Lua string literal, every byte outside printable
// ASCII (and the quote and backslash) as a decimal escape.
func luaString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			fmt.Fprintf(&b, "\\%03d", c)
			continue
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// wrkResult is what one wrk run reported.
type wrkResult struct {
	requests   int           // requests completed
	elapsed    time.Duration // the run's length, as wrk measured it
	throughput float64       // Requests/sec
	latency    map[float64]time.Duration
	max        time.Duration // the Thread Stats' maximum latency
	socketErrs map[string]int
	non2xx3xx  int // answers with a status of 400 or more
}

// failure describes what went wrong in the run, or is nil: every request
// must be answered, none with an error status.
func (r wrkResult) failure() error {
	var errs []error
	for kind, n := range r.socketErrs {
		if n > 0 {
			errs = append(errs, fmt.Errorf("%d socket errors (%s)", n, kind))
		}
	}
	if r.non2xx3xx > 0 {
		errs = append(errs, fmt.Errorf("%d of %d answers with a status of 400 or more", r.non2xx3xx, r.requests))
	}
	if r.requests == 0 {
		errs = append(errs, errors.New("no request was answered"))
	}
	return errors.Join(errs...)
}

// runWrk runs wrk against req for d (whole seconds, at least one), its
// script written to dir.
func runWrk(ctx context.Context, wrk, dir string, req wrkRequest, d time.Duration) (wrkResult, error) {
	script, err := os.CreateTemp(dir, "request-*.lua")
	if err != nil {
		return wrkResult{}, err
	}
	defer os.Remove(script.Name())
	if _, err := script.WriteString(req.script()); err != nil {
		script.Close()
		return wrkResult{}, err
	}
	if err := script.Close(); err != nil {
		return wrkResult{}, err
	}
	seconds := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, wrk,
		"-t", strconv.Itoa(wrkThreads), "-c", strconv.Itoa(wrkConnections),
		"-d", fmt.Sprintf("%ds", seconds), "--timeout", fmt.Sprintf("%ds", int(wrkTimeout/time.Second)),
		"--latency", "-s", filepath.Clean(script.Name()), req.url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w: %s", req.url, err, strings.TrimSpace(string(out)))
	}
	res, err := parseWrk(string(out))
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w in its output:\n%s", req.url, err, out)
	}
	if err := res.failure(); err != nil {
		return res, fmt.Errorf("wrk %s %s: %w", cmp.Or(req.method, "GET"), req.url, err)
	}
	return res, nil
}

// parseWrk reads the report of wrk 4 run with --latency:
//
//	Running 5s test @ http://127.0.0.1:8080/fast
//	  2 threads and 64 connections
//	  Thread Stats   Avg      Stdev     Max   +/- Stdev
//	    Latency   635.91us    0.89ms  12.92ms   93.69%
//	    Req/Sec    56.20k     8.07k   62.00k    86.54%
//	  Latency Distribution
//	     50%  250.00us
//	     …
//	     99%    5.80ms
//	  560000 requests in 5.10s, 158.15MB read
//	  Socket errors: connect 0, read 0, write 0, timeout 0
//	  Non-2xx or 3xx responses: 12
//	Requests/sec: 110905.73
//
// Lines it does not know are skipped; the request count, the length of the
// run, Requests/sec and the p50 and p99 must be there.
func parseWrk(out string) (wrkResult, error) {
	res := wrkResult{latency: map[float64]time.Duration{}, socketErrs: map[string]int{}}
	var sawCount, sawRate bool
	inDistribution := false
	s := bufio.NewScanner(strings.NewReader(out))
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		fields := strings.Fields(line)
		switch {
		case line == "Latency Distribution":
			inDistribution = true
			continue
		case inDistribution && len(fields) == 2 && strings.HasSuffix(fields[0], "%"):
			p, err := strconv.ParseFloat(strings.TrimSuffix(fields[0], "%"), 64)
			if err != nil {
				return res, fmt.Errorf("latency percentile %q: %w", fields[0], err)
			}
			d, err := parseWrkDuration(fields[1])
			if err != nil {
				return res, err
			}
			res.latency[p/100] = d
			continue
		case len(fields) >= 4 && fields[0] == "Latency":
			d, err := parseWrkDuration(fields[3])
			if err != nil {
				return res, err
			}
			res.max = d
		case len(fields) >= 4 && fields[1] == "requests" && fields[2] == "in":
			n, err := strconv.Atoi(fields[0])
			if err != nil {
				return res, fmt.Errorf("request count %q: %w", fields[0], err)
			}
			d, err := parseWrkDuration(strings.TrimSuffix(fields[3], ","))
			if err != nil {
				return res, err
			}
			res.requests, res.elapsed, sawCount = n, d, true
		case strings.HasPrefix(line, "Socket errors:"):
			for part := range strings.SplitSeq(strings.TrimPrefix(line, "Socket errors:"), ",") {
				kv := strings.Fields(part)
				if len(kv) != 2 {
					return res, fmt.Errorf("socket errors %q", line)
				}
				n, err := strconv.Atoi(kv[1])
				if err != nil {
					return res, fmt.Errorf("socket errors %q: %w", line, err)
				}
				res.socketErrs[kv[0]] = n
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "Non-2xx or 3xx responses:")))
			if err != nil {
				return res, fmt.Errorf("%q: %w", line, err)
			}
			res.non2xx3xx = n
		case strings.HasPrefix(line, "Requests/sec:"):
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
			if err != nil {
				return res, fmt.Errorf("%q: %w", line, err)
			}
			res.throughput, sawRate = v, true
		}
		inDistribution = false
	}
	switch {
	case !sawCount:
		return res, errors.New(`no "N requests in T" line`)
	case !sawRate:
		return res, errors.New(`no "Requests/sec:" line`)
	case res.latency[0.5] == 0 && res.requests > 0, res.latency[0.99] == 0 && res.requests > 0:
		return res, errors.New("no latency distribution (50% and 99%)")
	}
	return res, nil
}

// parseWrkDuration reads a duration as wrk prints it: 250.00us, 5.80ms,
// 1.20s, 2.00m, 1.00h.
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("duration %q: %w", s, err)
			}
			return time.Duration(f * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("duration %q: no unit (us, ms, s, m, h)", s)
}
