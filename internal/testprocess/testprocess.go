// Package testprocess runs a test binary again as another process of a
// deployment (an accepting server, a worker), for tests that need real
// processes: to kill one with SIGKILL, or to share a store across them. It
// also follows operations from the outside, as any HTTP client would.
//
// A test package that uses it calls Role first thing in its TestMain:
//
//	func TestMain(m *testing.M) {
//		testprocess.Role(roles)
//		goleak.VerifyTestMain(m)
//	}
package testprocess

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// roleVariable names the role the test binary runs as, when set.
const roleVariable = "ASYNCREPLY_TEST_ROLE"

// Role runs the role named in the environment, if any, and exits with its
// code; otherwise it returns and the tests run. A role prints "ready" and
// whatever the test needs (a URL) on one line of standard output once it
// serves, then runs until it is killed or receives SIGTERM.
func Role(roles map[string]func() int) {
	name := os.Getenv(roleVariable)
	if name == "" {
		return
	}
	run, ok := roles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown test role %q\n", name)
		os.Exit(2)
	}
	os.Exit(run())
}

// Process is a running role.
type Process struct {
	Cmd *exec.Cmd
	// Ready is what the role printed after "ready" (a URL, for a server).
	Ready string
}

// Start runs role in a new process of the test binary, with env added to
// the environment, and waits until it is ready. The process gets SIGTERM
// when the test ends, if it still runs.
func Start(t *testing.T, role string, env ...string) *Process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), roleVariable+"="+role), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		rest, ok := strings.CutPrefix(line, "ready")
		if !ok {
			t.Fatalf("%s process: %q, want a line starting with ready", role, line)
		}
		return &Process{Cmd: cmd, Ready: strings.TrimSpace(rest)}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s process not ready after 30s", role)
		return nil
	}
}

// Kill kills the process with SIGKILL, as a crash would, and waits for it.
func (p *Process) Kill(t *testing.T) {
	t.Helper()
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.Cmd.Wait()
}

// AwaitResponse long-polls an operation's monitor URL until it is done and
// returns its response body. 202 and 503 (a service recovering) are polled
// again until limit has passed. client must not follow redirects.
func AwaitResponse(client *http.Client, location string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, location, nil)
		req.Header.Set("Prefer", "wait=5")
		resp, err := client.Do(req)
		if err != nil {
			if time.Now().Before(deadline) && isRefused(err) { // a server restarting
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return "", err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted, http.StatusServiceUnavailable:
			continue
		case http.StatusSeeOther:
			final, err := client.Get(resp.Header.Get("Location"))
			if err != nil {
				return "", err
			}
			body, err := io.ReadAll(final.Body)
			final.Body.Close()
			if final.StatusCode != http.StatusOK {
				return "", fmt.Errorf("response status %d: %s", final.StatusCode, body)
			}
			return string(body), err
		default:
			return "", fmt.Errorf("poll status %d", resp.StatusCode)
		}
	}
	return "", errors.New("not done in time")
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
