package e2e_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
)

// brokerFeed is a test's own destination on a real broker, and a consumer
// of what arrives there.
type brokerFeed struct {
	// server is the broker's host:port.
	server string
	// publishURL is the --publish URL of the destination through the
	// broker at host:port.
	publishURL func(hostport string) string
	// messages are the bodies of the messages consumed, in order.
	messages <-chan message
	// dropsDuplicates says the destination drops an event published again
	// by its ID: JetStream's duplicate window.
	dropsDuplicates bool
}

// message is one message a brokerFeed consumed.
type message struct {
	body []byte
	// messageID is the broker's own message ID: AMQP's message-id, NATS's
	// Nats-Msg-Id header.
	messageID string
}

// feedBuffer holds the messages consumed and not read yet: more than the
// test's operations, with room for duplicates, so that a consumer never
// blocks.
const feedBuffer = 4 * (publishedNormally + publishedUnacked + publishedAfterKill + publishedAtLast)

// brokerUnavailable skips t, or fails it in CI, where a missing broker is a
// broken build.
func brokerUnavailable(t *testing.T, name, env, url string, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI and unreachable at %s: %v", name, url, err)
	}
	t.Skipf("%s unreachable at %s (%v); set %s to run this test", name, url, err, env)
}

// uniqueBrokerName is a stream, subject, exchange or queue name no other
// test run uses.
func uniqueBrokerName(t *testing.T) string {
	return fmt.Sprintf("asyncreply-e2e-%d-%s", time.Now().UnixNano(), strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()))
}

// natsFeed makes a JetStream stream of the test's own, capturing a subject
// of its own, and consumes it from its start. The stream is deleted at
// cleanup.
func natsFeed(t *testing.T) *brokerFeed {
	t.Helper()
	server := cmp.Or(os.Getenv("NATS_URL"), "nats://127.0.0.1:4222")
	nc, err := nats.Connect(server, nats.Timeout(5*time.Second))
	if err != nil {
		brokerUnavailable(t, "NATS", "NATS_URL", server, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ReplaceAll(uniqueBrokerName(t), ".", "_")
	subject := "asyncreply.e2e." + name
	stream, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name:     name,
		Subjects: []string{subject},
		Storage:  jetstream.MemoryStorage,
	})
	if err != nil {
		t.Fatalf("creating stream (is JetStream enabled?): %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("deleting stream %s: %v", name, err)
		}
	})
	consumer, err := stream.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	messages := make(chan message, feedBuffer)
	consuming, err := consumer.Consume(func(msg jetstream.Msg) {
		select {
		case messages <- message{body: msg.Data(), messageID: msg.Headers().Get(jetstream.MsgIDHeader)}:
		default:
			t.Errorf("more than %d messages unread", feedBuffer)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(consuming.Stop)
	u, err := neturl.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	return &brokerFeed{
		server: u.Host,
		publishURL: func(hostport string) string {
			v := *u
			v.Host, v.Path = hostport, "/"+subject
			return v.String()
		},
		messages:        messages,
		dropsDuplicates: true,
	}
}

// amqpFeed makes a RabbitMQ exchange of the test's own with a queue bound
// to it for every routing key, and consumes the queue. Both are deleted at
// cleanup.
func amqpFeed(t *testing.T) *brokerFeed {
	t.Helper()
	server := cmp.Or(os.Getenv("AMQP_URL"), "amqp://guest:guest@127.0.0.1:5672/")
	conn, err := amqp.DialConfig(server, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		brokerUnavailable(t, "RabbitMQ", "AMQP_URL", server, err)
	}
	var consuming sync.WaitGroup
	t.Cleanup(func() {
		conn.Close()
		consuming.Wait()
	})
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	name := uniqueBrokerName(t)
	if err := ch.ExchangeDeclare(name, amqp.ExchangeTopic, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ch.ExchangeDelete(name, false, false); err != nil {
			t.Errorf("deleting exchange %s: %v", name, err)
		}
	})
	if _, err := ch.QueueDeclare(name, false, false, true, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Errorf("deleting queue %s: %v", name, err)
		}
	})
	if err := ch.QueueBind(name, "asyncreply.#", name, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	messages := make(chan message, feedBuffer)
	consuming.Go(func() {
		// Ends when the connection closes, at cleanup.
		for d := range deliveries {
			select {
			case messages <- message{body: d.Body, messageID: d.MessageId}:
			default:
				t.Errorf("more than %d messages unread", feedBuffer)
			}
		}
	})
	u, err := neturl.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	return &brokerFeed{
		server: u.Host,
		publishURL: func(hostport string) string {
			v := *u
			v.Host, v.Path = hostport, "/"+name
			return v.String()
		},
		messages: messages,
	}
}

// brokerProxy forwards TCP connections to a broker until it is cut: then
// it resets every connection, and every new one, until it is restored.
// Muted, it drops what the broker sends on the connections made so far
// (its acknowledgements), still forwarding what it is sent, and resets
// new ones. The broker itself is untouched.
type brokerProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	muted bool
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newBrokerProxy(t *testing.T, target string) *brokerProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &brokerProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *brokerProxy) addr() string { return p.ln.Addr().String() }

func (p *brokerProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.isDown() {
			reset(client)
			continue
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			reset(client)
			continue
		}
		p.mu.Lock()
		if p.down || p.muted { // cut while dialing
			p.mu.Unlock()
			reset(client)
			reset(server)
			continue
		}
		p.conns[client], p.conns[server] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn, fromBroker bool) {
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 && !(fromBroker && p.isMuted()) {
					if _, err := dst.Write(buf[:n]); err != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			p.mu.Lock()
			delete(p.conns, client)
			delete(p.conns, server)
			p.mu.Unlock()
			client.Close()
			server.Close()
		}
		p.wg.Go(func() { pipe(server, client, false) })
		p.wg.Go(func() { pipe(client, server, true) })
	}
}

func (p *brokerProxy) isDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down || p.muted
}

func (p *brokerProxy) isMuted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.muted
}

// mute drops whatever the broker sends from now on, and resets new
// connections.
func (p *brokerProxy) mute() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.muted = true
}

// cut resets every connection and refuses new ones, as a broker gone from
// the network would.
func (p *brokerProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		reset(c)
	}
	clear(p.conns)
}

// restore forwards new connections, both ways, again.
func (p *brokerProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down, p.muted = false, false
}

// reset closes c with a TCP reset rather than an orderly close.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
