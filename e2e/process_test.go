package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startLimit bounds how long a process may take to start serving.
const startLimit = 30 * time.Second

// stopLimit bounds how long a process may take to exit after SIGTERM before
// it is killed.
const stopLimit = 10 * time.Second

// process is a server the test started: the gateway binary or puma.
type process struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited
	log    *lockedBuffer // its standard output and error, shown when a test fails
}

// startProcess runs name with args in dir and waits until a line of its
// output matches ready, whose first submatch it returns: the address the
// process serves on. The process is stopped when the test ends.
func startProcess(t *testing.T, dir string, ready *regexp.Regexp, name string, args ...string) (*process, string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so that stopping it reaches puma's children too
	pr, pw := io.Pipe()
	p := &process{name: filepath.Base(name), cmd: cmd, exited: make(chan struct{}), log: &lockedBuffer{}}
	cmd.Stdout = pw
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.name, err)
	}
	go func() {
		cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("output of %s %s:\n%s", p.name, strings.Join(args, " "), p.log.String())
		}
	})

	found := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(pr)
		for scanner.Scan() {
			line := scanner.Text()
			p.log.WriteString(line + "\n")
			if m := ready.FindStringSubmatch(line); m != nil && len(found) == 0 {
				found <- m[1]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case addr := <-found:
		return p, addr
	case <-p.exited:
		t.Fatalf("%s exited before serving:\n%s", p.name, p.log.String())
	case <-time.After(startLimit):
		t.Fatalf("%s not serving after %v:\n%s", p.name, startLimit, p.log.String())
	}
	return nil, ""
}

// kill kills the process (and its group) with SIGKILL, as a crash would,
// and waits until it has exited.
func (p *process) kill(t *testing.T) {
	t.Helper()
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(stopLimit):
		t.Fatalf("%s still running %v after SIGKILL", p.name, stopLimit)
	}
}

// stop sends SIGTERM to the process group and kills it if it has not exited
// within stopLimit.
func (p *process) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopLimit):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gatewayBinary is the asyncreply command, built once for all tests.
var gatewayBinary = sync.OnceValues(func() (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(binDir, "asyncreply")
	build := exec.Command("go", "build", "-o", bin, "./cmd/asyncreply")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/asyncreply: %w\n%s", err, out)
	}
	return bin, nil
})

// binDir holds the binaries the tests build; TestMain creates and removes it.
var binDir string

// gatewayListening matches the gateway's start line and captures its URL.
var gatewayListening = regexp.MustCompile(`msg="asyncreply gateway listening" url=(http://\S+)`)

// startGateway runs the asyncreply gateway with args (which must not
// include --listen) on listen, e.g. "127.0.0.1:0", and returns it and its
// URL once it serves.
func startGateway(t *testing.T, listen string, args ...string) (*process, string) {
	t.Helper()
	bin, err := gatewayBinary()
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"gateway", "--listen", listen}, args...)
	return startProcess(t, t.TempDir(), gatewayListening, bin, args...)
}

// probeClient keeps no connections open, so that none outlives a test.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// awaitOK polls url until it answers 200, for at most startLimit.
func awaitOK(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startLimit)
	defer cancel()
	var lastErr error
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := probeClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		lastErr = err
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("GET %s: not 200 after %v: %v", url, startLimit, errors.Join(lastErr, ctx.Err()))
}

// requireCommand returns the path of a command the test needs. A missing
// command skips the test with how to install it, except in CI (CI set),
// where it fails: there a missing dependency is a broken build.
func requireCommand(t *testing.T, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required in CI and is not installed (%s); `make deps` installs it", name, install)
		}
		t.Skipf("%s is not installed; %s to run this test", name, install)
	}
	return path
}
