package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/client"
)

// getWaitLimit bounds every wait in the get tests.
const getWaitLimit = 10 * time.Second

// serveAsync serves routes behind asyncreply on a test server.
func serveAsync(t *testing.T, routes http.Handler) *httptest.Server {
	t.Helper()
	ar, err := asyncreply.New(asyncreply.Config{Logger: slog.New(slog.DiscardHandler), Timeout: getWaitLimit})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ar.Handler(routes))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), getWaitLimit)
		defer cancel()
		if err := ar.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return srv
}

// watchedWriter is a buffer that can be waited on.
type watchedWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newWatchedWriter() *watchedWriter { return &watchedWriter{changed: make(chan struct{}, 1)} }

func (w *watchedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
	return w.buf.Write(p)
}

func (w *watchedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitContains waits until what was written contains s (true), or ctx ends
// or getWaitLimit passes (false).
func (w *watchedWriter) waitContains(ctx context.Context, s string) bool {
	timeout := time.NewTimer(getWaitLimit)
	defer timeout.Stop()
	for !strings.Contains(w.String(), s) {
		select {
		case <-w.changed:
		case <-ctx.Done():
			return false
		case <-timeout.C:
			return false
		}
	}
	return true
}

// runGetCommand runs "asyncreply get args..." and returns its exit code and
// outputs.
func runGetCommand(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errs bytes.Buffer
	code = Run(t.Context(), append([]string{"get"}, args...), env(nil), &out, &errs)
	return code, out.String(), errs.String()
}

// echo answers with the request's method, Content-Type, Authorization and
// body.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s %s\n%s", r.Method, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), body)
}

func TestGetShowsProgressThenTheBody(t *testing.T) {
	t.Parallel()
	stderr := newWatchedWriter()
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, step := range []struct {
			percent int
			message string
		}{{30, "querying"}, {60, "formatting\x1b[2J"}} {
			asyncreply.ReportProgress(r.Context(), step.percent, step.message)
			if !stderr.waitContains(r.Context(), fmt.Sprintf("%d%% %s", step.percent, printable(step.message))) {
				return
			}
		}
		fmt.Fprintf(w, "report %s\n", r.PathValue("id"))
	})))
	srv := serveAsync(t, mux)

	var stdout bytes.Buffer
	code := Run(t.Context(), []string{"get", srv.URL + "/reports/42"}, env(nil), &stdout, stderr)
	if code != exitOK || stdout.String() != "report 42\n" {
		t.Errorf("exit %d, stdout %q; want 0 and the report", code, stdout.String())
	}
	progress := stderr.String()
	if strings.Contains(progress, "\r") || strings.Contains(progress, "\x1b") {
		t.Errorf("stderr, not a terminal, has carriage returns or escapes: %q", progress)
	}
	wantOrder := regexp.MustCompile(`(?s)\[######-+\]  30% querying\n.*\[#{12}-+\]  60% formatting \[2J\n.*\[#{20}\] 100% `)
	if !wantOrder.MatchString(progress) {
		t.Errorf("stderr %q, want a line each for 30%%, 60%% and 100%%, in order", progress)
	}
	for _, line := range strings.Split(strings.TrimSuffix(progress, "\n"), "\n") {
		if strings.Count(progress, line+"\n") > 1 {
			t.Errorf("line %q repeated: a line is printed only when the progress changes", line)
		}
	}
}

func TestGetPostsDataAndHeaders(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("/exports", asyncreply.Async(http.HandlerFunc(echo)))
	srv := serveAsync(t, mux)
	dir := t.TempDir()
	payload := filepath.Join(dir, "payload.json")
	if err := os.WriteFile(payload, []byte(`{"rows":1000}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"inline data", []string{"-d", "a=1", srv.URL + "/exports"}, "POST application/x-www-form-urlencoded \na=1"},
		{"@file, a header, flags after the URL", []string{srv.URL + "/exports", "-d", "@" + payload, "-H", "Content-Type: application/json", "-H", "Authorization:Bearer alice"},
			"POST application/json Bearer alice\n{\"rows\":1000}"},
		{"-X", []string{"-X", "PUT", "-d", "x", srv.URL + "/exports"}, "PUT application/x-www-form-urlencoded \nx"},
		{"no data", []string{srv.URL + "/exports", "--respond-async"}, "GET  \n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runGetCommand(t, tc.args...)
			if code != exitOK || stdout != tc.want {
				t.Errorf("exit %d, stdout %q (stderr %q); want 0 and %q", code, stdout, stderr, tc.want)
			}
		})
	}
}

func TestGetReadsStdin(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("/exports", asyncreply.Async(http.HandlerFunc(echo)))
	srv := serveAsync(t, mux)
	o, err := parseGet([]string{"-d", "@-", srv.URL + "/exports"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.stdin = strings.NewReader("from stdin")
	var stdout bytes.Buffer
	if code := runGet(t.Context(), o, &stdout, io.Discard); code != exitOK || stdout.String() != "POST application/x-www-form-urlencoded \nfrom stdin" {
		t.Errorf("exit %d, stdout %q", code, stdout.String())
	}
}

func TestGetWritesTheOutputFile(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte{0, 1, 2, 0xff}) // bytes, not text
	})))
	mux.Handle("GET /broken", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("broken")
	})))
	srv := serveAsync(t, mux)
	output := filepath.Join(t.TempDir(), "report.bin")

	code, stdout, _ := runGetCommand(t, "-o", output, srv.URL+"/reports/1")
	got, err := os.ReadFile(output)
	if code != exitOK || stdout != "" || err != nil || !bytes.Equal(got, []byte{0, 1, 2, 0xff}) {
		t.Errorf("exit %d, stdout %q, file %v (%v); want 0, nothing, and the body in the file", code, stdout, got, err)
	}
	if code, _, _ := runGetCommand(t, "-o", output, srv.URL+"/broken"); code != exitFailure {
		t.Errorf("a failed operation: exit %d, want %d", code, exitFailure)
	}
	if again, _ := os.ReadFile(output); !bytes.Equal(again, got) {
		t.Errorf("a failed operation overwrote -o's file with %q", again)
	}
}

func TestGetFailures(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("GET /broken", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("broken")
	})))
	mux.Handle("GET /missing", asyncreply.Async(http.NotFoundHandler()))
	srv := serveAsync(t, mux)
	for path, want := range map[string]*regexp.Regexp{
		"/broken":                            regexp.MustCompile(`^asyncreply get: 500 Internal Server Error: Internal Server Error: The handler failed while producing the response.\n$`),
		"/missing":                           regexp.MustCompile(`^asyncreply get: 404 Not Found\n$`),
		"/operations/AAAAAAAAAAAAAAAAAAAAAA": regexp.MustCompile(`^asyncreply get: 404 Not Found: Operation not found: `),
	} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runGetCommand(t, srv.URL+path)
			lastLine := stderr[strings.LastIndex(strings.TrimSuffix(stderr, "\n"), "\n")+1:]
			if code != exitFailure || stdout != "" || !want.MatchString(lastLine) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, nothing, and %s", code, stdout, stderr, exitFailure, want)
			}
		})
	}
}

func TestGetFollowsAMonitorURL(t *testing.T) {
	t.Parallel()
	stderr := newWatchedWriter()
	mux := http.NewServeMux()
	mux.Handle("GET /reports/{id}", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Still running when the command starts: its first GET of the
		// monitor URL is answered 202, without a Location.
		if stderr.waitContains(r.Context(), "Running") {
			fmt.Fprintf(w, "report %s", r.PathValue("id"))
		}
	})))
	srv := serveAsync(t, mux)
	resp, err := srv.Client().Get(srv.URL + "/reports/9") // a client that does not follow
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	monitor := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || monitor == "" {
		t.Fatalf("GET /reports/9 = %d, Location %q; want 202 and a monitor URL", resp.StatusCode, monitor)
	}
	var stdout bytes.Buffer
	if code := Run(t.Context(), []string{"get", monitor}, env(nil), &stdout, stderr); code != exitOK || stdout.String() != "report 9" {
		t.Errorf("get %s: exit %d, stdout %q, stderr %q; want 0 and the report", monitor, code, stdout.String(), stderr.String())
	}
}

func TestGetInterruptedDeletesTheOperation(t *testing.T) {
	t.Parallel()
	started := make(chan string, 1)
	canceled := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("GET /export", asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := asyncreply.OperationID(r.Context())
		started <- id
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(getWaitLimit):
		}
	})))
	srv := serveAsync(t, mux)
	stderr := newWatchedWriter()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		defer cancel()
		// The 202 has been read once progress is shown.
		stderr.waitContains(ctx, "%")
		select {
		case <-started:
		case <-time.After(getWaitLimit):
		}
	}()
	if code := Run(ctx, []string{"get", srv.URL + "/export"}, env(nil), io.Discard, stderr); code != exitFailure {
		t.Errorf("exit %d when interrupted, want %d", code, exitFailure)
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr %q, want it to say the command was interrupted", stderr.String())
	}
	select {
	case <-canceled:
	case <-time.After(getWaitLimit):
		t.Fatal("the handler's context was not canceled")
	}
}

func TestGetUsageErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing.json")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "a URL is required"},
		{[]string{"reports/42"}, `URL "reports/42": want an absolute`},
		{[]string{"http://a.test/1", "http://a.test/2"}, `unexpected argument "http://a.test/2"`},
		{[]string{"-H", "no colon", "http://a.test/"}, `invalid value "no colon" for flag -H`},
		{[]string{"-X", "GET ME", "http://a.test/"}, `-X: invalid method "GET ME"`},
		{[]string{"-d", "@" + missing, "http://a.test/"}, "-d: open " + missing},
		{[]string{"--unknown", "http://a.test/"}, "flag provided but not defined: -unknown"},
	} {
		code, stdout, stderr := runGetCommand(t, tc.args...)
		if code != exitUsage || stdout != "" || !strings.HasPrefix(stderr, "asyncreply get: ") || !strings.Contains(stderr, tc.want) {
			t.Errorf("get %q: exit %d, stdout %q, stderr %q; want %d and %q", tc.args, code, stdout, stderr, exitUsage, tc.want)
		}
	}
}

func TestGetHelp(t *testing.T) {
	t.Parallel()
	code, stdout, _ := runGetCommand(t, "--help")
	if code != exitOK {
		t.Errorf("--help: exit %d, want 0", code)
	}
	for _, flag := range []string{"--X", "--d", "--H", "--o", "--respond-async"} {
		if !strings.Contains(stdout, "\n  "+flag+" ") {
			t.Errorf("--help does not list %s:\n%s", flag, stdout)
		}
	}
}

func TestProgressBarOnATerminalRedrawsInPlace(t *testing.T) {
	t.Parallel()
	var w bytes.Buffer
	bar := &progressBar{w: &w, terminal: true}
	bar.update(nil, progressOf(10, "a longer message"))
	bar.update(nil, progressOf(10, "a longer message")) // unchanged: not redrawn
	bar.update(nil, progressOf(50, "short"))
	bar.finish()
	want := "\r[##------------------]  10% a longer message" +
		"\r[##########----------]  50% short           " + // wipes the longer line's end
		"\n"
	if w.String() != want {
		t.Errorf("terminal output\n%q\nwant\n%q", w.String(), want)
	}
}

func progressOf(percent int, message string) client.Progress {
	return client.Progress{Status: "Running", Percent: percent, Message: message}
}
