package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The timeouts the tests configure: short, so that a test waits for them
// rather than for the defaults.
const (
	testReadTimeout = 300 * time.Millisecond
	testIdleTimeout = 300 * time.Millisecond
)

// started is a command running in the background, and its listener's URL.
type started struct {
	base string
	stop func()
}

// startCommand runs args (with the test's timeouts) until the test ends,
// and returns the URL it listens at, which find reads in its output.
func startCommand(t *testing.T, args []string, find func(stdout, stderr *lines) string) started {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	stdout, stderr := newLines(), newLines()
	exited := make(chan int, 1)
	args = append(args, "--listen", "127.0.0.1:0", "--read-timeout", testReadTimeout.String(), "--idle-timeout", testIdleTimeout.String())
	go func() { exited <- Run(ctx, args, env(nil), stdout, stderr) }()
	s := started{base: find(stdout, stderr)}
	s.stop = func() {
		cancel()
		if code := <-exited; code != 0 {
			t.Errorf("%s exited %d after shutdown, want 0", args[0], code)
		}
	}
	t.Cleanup(s.stop)
	return s
}

// listener is the public listener of a command the test started: its URL,
// and requests to it that read a body — passed through to an upstream, or
// recorded for an asynchronous route.
type listener struct {
	base       string
	bodyRoutes []string
}

// eachListener runs test against the public listener of each command that
// serves one: the gateway, and the demo.
func eachListener(t *testing.T, test func(t *testing.T, l listener)) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "uploaded")
	}))
	t.Cleanup(upstream.Close)
	gatewayURL := func(_, stderr *lines) string {
		return stderr.waitFor(t, regexp.MustCompile(`listening" url=(http://\S+)`))[1]
	}
	demoURL := func(stdout, _ *lines) string {
		return stdout.waitFor(t, regexp.MustCompile(`Open (http://\S+)/reports/42`))[1]
	}
	for _, c := range []struct {
		name    string
		args    []string
		find    func(stdout, stderr *lines) string
		targets []string
	}{
		{"gateway", []string{"gateway", "--backend", "memory:", "--upstream", upstream.URL, "--async", "POST /exports"}, gatewayURL, []string{"POST /upload", "POST /exports"}},
		{"demo", []string{"demo", "--delay", "0s"}, demoURL, []string{"GET /reports/42"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := startCommand(t, c.args, c.find)
			test(t, listener{base: s.base, bodyRoutes: c.targets})
		})
	}
}

func dial(t *testing.T, base string) net.Conn {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// Only against a listener that never closes the connection: every
	// test expects it closed long before.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	return conn
}

// readUntilClosed reads conn until the server closes it, and fails the
// test if it does not.
func readUntilClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server never closed the connection")
	}
	// A clean close, or a reset: the server closed with trickled bytes unread.
}

func TestSlowBodyIsCutOffAtTheReadTimeout(t *testing.T) {
	t.Parallel()
	eachListener(t, func(t *testing.T, l listener) {
		for _, route := range l.bodyRoutes {
			t.Run(route, func(t *testing.T) { trickleBody(t, l.base, route) })
		}
	})
}

// trickleBody sends a request to route a byte at a time, and checks that the
// server closes the connection once the read timeout has passed, long before
// the body is sent.
func trickleBody(t *testing.T, base, route string) {
	method, path, _ := strings.Cut(route, " ")
	// Before the dial: the server's read deadline runs from when it accepts
	// the connection, which may be before the request head is written.
	start := time.Now()
	conn := dial(t, base)
	const declared = 1000
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: app.example\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", method, path, declared)

	// A byte every 10 ms: the whole body would take 10 s.
	sent := make(chan int, 1)
	go func() {
		n := 0
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for ; n < declared; n++ {
			if _, err := conn.Write([]byte{'x'}); err != nil {
				break
			}
			<-tick.C
		}
		sent <- n
	}()
	readUntilClosed(t, conn)
	elapsed := time.Since(start)
	conn.Close() // ends the trickle, if the server's close has not yet
	if n := <-sent; n >= declared {
		t.Errorf("the client sent all %d bytes: the body was not cut off", n)
	}
	if elapsed < testReadTimeout {
		t.Errorf("closed after %s, before the read timeout of %s", elapsed, testReadTimeout)
	}
}

func TestIdleConnectionIsClosedAtTheIdleTimeout(t *testing.T) {
	t.Parallel()
	eachListener(t, func(t *testing.T, l listener) {
		conn := dial(t, l.base)
		io.WriteString(conn, "GET /operations/healthz HTTP/1.1\r\nHost: app.example\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("health check: %d, Connection: close %t; want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
		}
		idle := time.Now()
		readUntilClosed(t, conn)
		// The server's idle clock starts once it has written the answer,
		// a moment before this client has read it: half the timeout tells
		// a connection held for the timeout from one closed at once.
		if elapsed := time.Since(idle); elapsed < testIdleTimeout/2 {
			t.Errorf("closed after %s idle, long before the idle timeout of %s", elapsed, testIdleTimeout)
		}
	})
}

func TestReadTimeoutDoesNotCutOffASlowAnswer(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		// A slow application: it answers well after the read timeout,
		// which bounds the client's sending of the body, not the answer.
		select {
		case <-time.After(3 * testReadTimeout):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "got %s", body)
	}))
	defer upstream.Close()
	s := startCommand(t, []string{"gateway", "--backend", "memory:", "--upstream", upstream.URL}, func(_, stderr *lines) string {
		return stderr.waitFor(t, regexp.MustCompile(`listening" url=(http://\S+)`))[1]
	})
	client := &http.Client{Transport: &http.Transport{}}
	defer client.Transport.(*http.Transport).CloseIdleConnections()
	resp, err := client.Post(s.base+"/slow", "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "got payload" {
		t.Errorf("slow answer: %d %q %v, want 200 \"got payload\"", resp.StatusCode, body, err)
	}
}
