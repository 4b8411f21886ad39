package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// binaries are the programs the out-of-process mode starts, built once
// into a directory of their own.
type binaries struct {
	dir        string
	asyncreply string // the gateway, as users run it
	baseline   string // bench/cmd/baseline: the upstream app and every baseline
}

// buildBinaries builds cmd/asyncreply and bench/cmd/baseline into a new
// temporary directory, which remove deletes.
func buildBinaries(ctx context.Context) (*binaries, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("the out-of-process mode builds its servers with the go command: %w", err)
	}
	dir, err := os.MkdirTemp("", "asyncreply-bench-bin-")
	if err != nil {
		return nil, err
	}
	b := &binaries{dir: dir, asyncreply: filepath.Join(dir, "asyncreply"), baseline: filepath.Join(dir, "baseline")}
	for path, pkg := range map[string]string{
		b.asyncreply: "github.com/asyncreply/asyncreply/cmd/asyncreply",
		b.baseline:   "github.com/asyncreply/asyncreply/bench/cmd/baseline",
	} {
		out, err := exec.CommandContext(ctx, goTool, "build", "-o", path, pkg).CombinedOutput()
		if err != nil {
			b.remove()
			return nil, fmt.Errorf("go build %s: %w: %s", pkg, err, bytes.TrimSpace(out))
		}
	}
	return b, nil
}

func (b *binaries) remove() error { return os.RemoveAll(b.dir) }

// process is a server running in a process of its own, on a loopback port
// of its own.
type process struct {
	name   string
	url    string // http://127.0.0.1:PORT
	cmd    *exec.Cmd
	output *tail
	exited chan struct{} // closed once the process has exited
	err    error         // how it exited, once exited is closed
	ended  bool          // stop was called
}

// freeAddr returns a loopback address no one listens on, for a server
// process to listen on: the port is free when asked, and a process
// started at once gets it.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startProcess starts path with args, followed by the flag listen and a
// free loopback address, and extra environment variables, and waits until
// GET of health answers 200. Another program may take the address between
// freeAddr's answer and the process's listening: the process then exits,
// and is started again on another. The caller stops the process.
func startProcess(ctx context.Context, name, path string, env []string, health string, listen string, args ...string) (*process, error) {
	for attempt := 1; ; attempt++ {
		p, err := startOnce(ctx, name, path, env, health, listen, args...)
		if err == nil {
			return p, nil
		}
		if p == nil || attempt == 3 || !strings.Contains(p.output.String(), "address already in use") {
			return nil, err
		}
	}
}

// startOnce is one attempt of startProcess; the process it returns with an
// error, if any, has exited.
func startOnce(ctx context.Context, name, path string, env []string, health string, listen string, args ...string) (*process, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, append(args, listen, addr)...)
	cmd.Env = append(os.Environ(), env...)
	p := &process{name: name, url: "http://" + addr, cmd: cmd, output: &tail{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	if err := cmd.Start(); err != nil {
		return p, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(ctx, p.url+health); err != nil {
		p.stop()
		return p, err
	}
	return p, nil
}

// readyLimit bounds how long a server process may take to answer its
// health check: a PostgreSQL gateway migrates its schema first.
const readyLimit = time.Minute

// waitReady polls healthURL until it answers 200, failing as soon as the
// process exits.
func (p *process) waitReady(ctx context.Context, healthURL string) error {
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(readyLimit)
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, healthURL, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no 200 from %s after %v: %s", p.name, healthURL, readyLimit, p.output)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.exited:
			return fmt.Errorf("%s exited before it was ready (%v): %s", p.name, p.err, p.output)
		case <-ticker.C:
		}
	}
}

// stopLimit is how long a process is given to shut down gracefully
// before it is killed.
const stopLimit = 10 * time.Second

// stop ends the process: SIGTERM, then SIGKILL if it has not exited within
// stopLimit. It returns the process's error only if it had exited by
// itself before being told to. Stopping it again does nothing.
func (p *process) stop() error {
	if p.ended {
		return nil
	}
	p.ended = true
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited by itself (%v): %s", p.name, p.err, p.output)
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopLimit):
		p.cmd.Process.Kill()
		<-p.exited
	}
	return nil
}

// alive reports an error if the process has exited.
func (p *process) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.output)
	default:
		return nil
	}
}

// tail keeps the last bytes a process wrote, for the errors that name it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 4 << 10

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > tailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailSize:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if s == "" {
		return "no output"
	}
	return "its output ends with:\n" + s
}

// processes collects the server processes of a scenario, stopped
// together.
type processes []*process

func (ps *processes) start(ctx context.Context, name, path string, env []string, health, listen string, args ...string) (*process, error) {
	p, err := startProcess(ctx, name, path, env, health, listen, args...)
	if err != nil {
		return nil, err
	}
	*ps = append(*ps, p)
	return p, nil
}

// stop stops every process, the last started first, and reports any that
// had exited by itself.
func (ps processes) stop() error {
	var errs []error
	for i := len(ps) - 1; i >= 0; i-- {
		errs = append(errs, ps[i].stop())
	}
	return errors.Join(errs...)
}
