package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/asyncreply/asyncreply/notify"
	"github.com/asyncreply/asyncreply/notify/broker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// brokerUnreachable skips t, or fails it in CI, where a missing broker is a
// broken build.
func brokerUnreachable(t *testing.T, name, env, url string, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI and unreachable at %s: %v", name, url, err)
	}
	t.Skipf("%s unreachable at %s (%v); set %s to run this test", name, url, err, env)
}

// uniqueName is a name no other test run uses.
func uniqueName(t *testing.T) string {
	return fmt.Sprintf("asyncreply-test-%d-%s", time.Now().UnixNano(), strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()))
}

// testEvent is the n-th event of a test, data and all.
func testEvent(n int) *notify.Event {
	return &notify.Event{
		SpecVersion:     notify.SpecVersion,
		ID:              fmt.Sprintf("op%04d.Succeeded", n),
		Source:          "https://api.example.com/operations/",
		Type:            notify.TypeSucceeded,
		Subject:         fmt.Sprintf("op%04d", n),
		Time:            time.Date(2026, 12, 1, 12, 0, n%60, 0, time.UTC),
		DataContentType: "application/json",
		Data:            json.RawMessage(fmt.Sprintf(`{"id":"op%04d","status":"Succeeded"}`, n)),
	}
}

// checkCloudEvent parses body as a CloudEvent in the JSON format and checks
// it is want.
func checkCloudEvent(t *testing.T, body []byte, want *notify.Event) {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("message body is not JSON: %v: %s", err, body)
	}
	for attr, value := range map[string]any{
		"specversion": "1.0",
		"id":          want.ID,
		"type":        want.Type,
		"source":      want.Source,
		"subject":     want.Subject,
		"time":        want.Time.Format(time.RFC3339),
	} {
		if got[attr] != value {
			t.Errorf("CloudEvent %s = %v, want %v", attr, got[attr], value)
		}
	}
	data, _ := json.Marshal(got["data"])
	var wantData any
	json.Unmarshal(want.Data, &wantData)
	wantJSON, _ := json.Marshal(wantData)
	if string(data) != string(wantJSON) {
		t.Errorf("CloudEvent data = %s, want %s", data, wantJSON)
	}
}

// eventID is the id attribute of a CloudEvent in the JSON format.
func eventID(t *testing.T, body []byte) string {
	t.Helper()
	var ev struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" {
		t.Fatalf("message is not a CloudEvent with an id (%v): %s", err, body)
	}
	return ev.ID
}

// proxy forwards TCP connections to a broker, and can cut them all, as a
// broker restart or a network failure would.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		server, err := net.Dial("tcp", target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Go(func() { io.Copy(server, client); server.Close(); client.Close() })
		p.wg.Go(func() { io.Copy(client, server); client.Close(); server.Close() })
	}
}

// redirect sends new connections to target.
func (p *proxy) redirect(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// cut closes every connection made so far; new ones still go through.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestOpenURLErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url  string
		want string
	}{
		{"amqp://guest:s3cret@127.0.0.1:5672/", "amqp URL needs an exchange: amqp://127.0.0.1:5672/EXCHANGE"},
		{"amqp://guest:s3cret@127.0.0.1:5672", "amqp URL needs an exchange"},
		{"amqps://guest:s3cret@broker.example/vhost/events", "give a virtual host as ?vhost="},
		{"amqp://guest:s3cret@127.0.0.1:5672/events?routingkey=x", `unknown parameter "routingkey" (known: vhost, routing_key)`},
		{"nats://tok3n@127.0.0.1:4222", "nats URL needs a subject: nats://127.0.0.1:4222/SUBJECT"},
		{"nats://tok3n@127.0.0.1:4222/events.*", "not a literal subject"},
		{"nats://tok3n@127.0.0.1:4222/events?create_stream=maybe", `create_stream="maybe" is not true or false`},
		{"kafka://user:s3cret@127.0.0.1:9092/events", `scheme "kafka" is not nats, amqp or amqps`},
		{"amqp://user:s3cret@127.0.0.1:5672/events?vhost=%zz", "query"},
		{"amqp://user:s3cret@[::1/events", "does not parse"},
	} {
		_, err := broker.Open(t.Context(), tt.url)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%q) = %v, want an error saying %q", tt.url, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "tok3n") {
			t.Errorf("Open(%q)'s error reveals the credentials: %v", tt.url, err)
		}
	}
}

func TestOpenUnreachableHidesCredentials(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: a listener closed at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, url := range []string{
		"amqp://guest:s3cret@" + addr + "/events",
		"nats://user:s3cret@" + addr + "/events",
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := broker.Open(ctx, url)
		cancel()
		if err == nil {
			t.Fatalf("Open(%q) succeeded with nothing listening", url)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q)'s error reveals the password: %v", url, err)
		}
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("Open(%q)'s error does not say which broker: %v", url, err)
		}
	}
}

// sendAll sends every event and fails t on the first error.
func sendAll(t *testing.T, p notify.Sender, events []*notify.Event) {
	t.Helper()
	for _, ev := range events {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := p.Send(ctx, ev)
		cancel()
		if err != nil {
			t.Fatalf("Send(%s): %v", ev.ID, err)
		}
	}
}

func TestSendRefusesEventsWithoutID(t *testing.T) {
	t.Parallel()
	var p broker.NATSPublisher
	if err := p.Send(t.Context(), &notify.Event{Type: notify.TypeFailed}); err == nil || !strings.Contains(err.Error(), "without an ID") {
		t.Errorf("Send of an event without an ID = %v", err)
	}
	var a broker.AMQPPublisher
	if err := a.Send(t.Context(), nil); err == nil || errors.Is(err, broker.ErrClosed) {
		t.Errorf("Send of nil = %v", err)
	}
	// Publishers made without Open say so instead of hanging.
	if err := a.Send(t.Context(), testEvent(1)); err == nil || !strings.Contains(err.Error(), "not opened") {
		t.Errorf("Send on a zero AMQPPublisher = %v", err)
	}
	if err := p.Send(t.Context(), testEvent(1)); err == nil || !strings.Contains(err.Error(), "not opened") {
		t.Errorf("Send on a zero NATSPublisher = %v", err)
	}
	a.Close()
	p.Close()
}

// sendConcurrently sends events from several goroutines at once, as an
// outbox with several workers does.
func sendConcurrently(t *testing.T, p notify.Sender, events []*notify.Event) {
	t.Helper()
	const workers = 8
	errs := make(chan error, len(events))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(events); i += workers {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				errs <- p.Send(ctx, events[i])
				cancel()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
}

// newSilentListener accepts connections and never writes: a broker that
// stopped answering.
func newSilentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}
