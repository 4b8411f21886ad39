package broker_test

import (
	"cmp"
	"context"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/asyncreply/asyncreply/internal/testwait"
	"github.com/asyncreply/asyncreply/notify"
	"github.com/asyncreply/asyncreply/notify/broker"
)

// amqpURL is the RabbitMQ that tests use.
func amqpURL() string {
	return cmp.Or(os.Getenv("AMQP_URL"), "amqp://guest:guest@127.0.0.1:5672/")
}

// amqpBundle is a test's own exchange, with a queue bound to it for every
// routing key, consumed.
type amqpBundle struct {
	ch         *amqp.Channel
	exchange   string
	deliveries <-chan amqp.Delivery
	// publisherURL is Open's URL of the exchange.
	publisherURL string
}

func setupAMQP(t *testing.T) *amqpBundle {
	t.Helper()
	conn, err := amqp.DialConfig(amqpURL(), amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		brokerUnreachable(t, "RabbitMQ", "AMQP_URL", amqpURL(), err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	name := uniqueName(t)
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
	u, err := url.Parse(amqpURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return &amqpBundle{ch: ch, exchange: name, deliveries: deliveries, publisherURL: u.String()}
}

func openAMQP(t *testing.T, rawURL string) broker.Publisher {
	t.Helper()
	p, err := broker.Open(t.Context(), rawURL)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestAMQPDeliversOneCloudEventPerSend(t *testing.T) {
	t.Parallel()
	b := setupAMQP(t)
	p := openAMQP(t, b.publisherURL)

	const n = 200
	events := make([]*notify.Event, n)
	for i := range events {
		events[i] = testEvent(i)
	}
	sendAll(t, p, events)
	seen := map[string]bool{}
	for i := range n {
		d := testwait.Recv(t, b.deliveries, "an event's message")
		id := eventID(t, d.Body)
		if seen[id] {
			t.Fatalf("event %s delivered twice", id)
		}
		seen[id] = true
		want := events[i]
		if id != want.ID {
			t.Fatalf("message %d is event %s, want %s (in order of Send)", i, id, want.ID)
		}
		checkCloudEvent(t, d.Body, want)
		if d.ContentType != notify.ContentType {
			t.Errorf("content type %q, want %q", d.ContentType, notify.ContentType)
		}
		if d.MessageId != want.ID {
			t.Errorf("message ID %q, want the event's ID %q", d.MessageId, want.ID)
		}
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("delivery mode %d, want persistent", d.DeliveryMode)
		}
		if d.RoutingKey != notify.TypeSucceeded {
			t.Errorf("routing key %q, want the event's type", d.RoutingKey)
		}
		if d.Headers["cloudEvents_type"] != want.Type || d.Headers["cloudEvents_id"] != want.ID {
			t.Errorf("headers %v do not repeat the event's id and type", d.Headers)
		}
	}

	// A redelivery, as the outbox makes after a lost acknowledgement:
	// RabbitMQ has no duplicate window, so the consumer sees it again and
	// recognises it by its ID.
	sendAll(t, p, events[:1])
	d := testwait.Recv(t, b.deliveries, "the duplicate's message")
	if id := eventID(t, d.Body); !seen[id] || d.MessageId != id {
		t.Errorf("the duplicate is event %s with message ID %s, want one of those delivered", id, d.MessageId)
	}
}

func TestAMQPRoutingKeyParameter(t *testing.T) {
	t.Parallel()
	b := setupAMQP(t)
	p := openAMQP(t, b.publisherURL+"?routing_key=asyncreply.all")
	sendAll(t, p, []*notify.Event{testEvent(1)})
	if d := testwait.Recv(t, b.deliveries, "the event's message"); d.RoutingKey != "asyncreply.all" {
		t.Errorf("routing key %q, want the URL's routing_key", d.RoutingKey)
	}
}

func TestAMQPUnroutableIsAnError(t *testing.T) {
	t.Parallel()
	b := setupAMQP(t)
	// Bound only for asyncreply.#: this key reaches no queue.
	p := openAMQP(t, b.publisherURL+"?routing_key=elsewhere")
	err := p.Send(t.Context(), testEvent(1))
	if !errors.Is(err, broker.ErrUnroutable) || !strings.Contains(err.Error(), `routing key "elsewhere"`) {
		t.Fatalf("Send with no queue bound = %v, want ErrUnroutable naming the routing key", err)
	}
	// The channel is still good for the next event.
	q := openAMQP(t, b.publisherURL)
	sendAll(t, q, []*notify.Event{testEvent(2)})
	testwait.Recv(t, b.deliveries, "the routable event's message")
}

func TestAMQPMissingExchange(t *testing.T) {
	t.Parallel()
	b := setupAMQP(t)
	missing := strings.Replace(b.publisherURL, b.exchange, b.exchange+"-missing", 1)
	_, err := broker.Open(t.Context(), missing)
	if err == nil || !strings.Contains(err.Error(), "NOT_FOUND") || !strings.Contains(err.Error(), b.exchange+"-missing") {
		t.Fatalf("Open of a missing exchange = %v, want an error naming it", err)
	}

	// An exchange deleted while the publisher is open.
	p := openAMQP(t, b.publisherURL)
	sendAll(t, p, []*notify.Event{testEvent(1)})
	other := uniqueName(t) + "-deleted"
	if err := b.ch.ExchangeDeclare(other, amqp.ExchangeFanout, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	q := openAMQP(t, strings.Replace(b.publisherURL, b.exchange, other, 1))
	if err := b.ch.ExchangeDelete(other, false, false); err != nil {
		t.Fatal(err)
	}
	err = q.Send(t.Context(), testEvent(2))
	if err == nil || !strings.Contains(err.Error(), "NOT_FOUND") {
		t.Fatalf("Send to a deleted exchange = %v, want the broker's NOT_FOUND", err)
	}

	// The broker closed that channel; once the exchange is back, the next
	// Send opens another.
	if err := b.ch.ExchangeDeclare(other, amqp.ExchangeFanout, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.ch.ExchangeDelete(other, false, false) })
	if err := b.ch.QueueBind(b.exchange, "", other, false, nil); err != nil {
		t.Fatal(err)
	}
	sendAll(t, q, []*notify.Event{testEvent(3)})
	testwait.Recv(t, b.deliveries, "the first event") // testEvent(1), by p
	if d := testwait.Recv(t, b.deliveries, "the event sent after the channel closed"); eventID(t, d.Body) != testEvent(3).ID {
		t.Errorf("got %s, want %s", eventID(t, d.Body), testEvent(3).ID)
	}
}

func TestAMQPReconnectsAfterConnectionLoss(t *testing.T) {
	t.Parallel()
	b := setupAMQP(t)
	u, _ := url.Parse(b.publisherURL)
	px := newProxy(t, u.Host)
	u.Host = px.addr()
	p := openAMQP(t, u.String())

	sendAll(t, p, []*notify.Event{testEvent(1)})
	testwait.Recv(t, b.deliveries, "the first event")
	for i := 2; i <= 4; i++ {
		px.cut()
		sendAll(t, p, []*notify.Event{testEvent(i)})
		if d := testwait.Recv(t, b.deliveries, "an event sent after the connection was cut"); eventID(t, d.Body) != testEvent(i).ID {
			t.Fatalf("got %s, want %s", eventID(t, d.Body), testEvent(i).ID)
		}
	}
}

func TestAMQPSendHonoursContext(t *testing.T) {
	t.Parallel()
	b := setupAMQP(t)
	p := openAMQP(t, b.publisherURL)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := p.Send(ctx, testEvent(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a canceled context = %v", err)
	}

	// A broker that accepts connections and never answers, when OpenAMQP
	// dials it and when Send dials again after losing the connection: both
	// end with their context, not with the handshake's 30 seconds.
	silent := newSilentListener(t)
	ctx, cancel = context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := broker.OpenAMQP(ctx, broker.AMQPConfig{URL: "amqp://guest:guest@" + silent, Exchange: b.exchange})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("OpenAMQP to a silent broker = %v, want the context's deadline", err)
	}
	u, _ := url.Parse(b.publisherURL)
	px := newProxy(t, u.Host)
	u.Host = px.addr()
	q := openAMQP(t, u.String())
	px.redirect(silent)
	px.cut()
	ctx, cancel = context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := q.Send(ctx, testEvent(1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send redialling a silent broker = %v, want the context's deadline", err)
	}

	// Close ends later Sends.
	p.Close()
	if err := p.Send(t.Context(), testEvent(2)); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
}

func TestAMQPConcurrentSends(t *testing.T) {
	t.Parallel()
	b := setupAMQP(t)
	p := openAMQP(t, b.publisherURL)
	events := make([]*notify.Event, 200)
	for i := range events {
		events[i] = testEvent(i)
	}
	sendConcurrently(t, p, events)
	seen := map[string]bool{}
	for range events {
		seen[eventID(t, testwait.Recv(t, b.deliveries, "an event's message").Body)] = true
	}
	if len(seen) != len(events) {
		t.Errorf("%d distinct events received of %d sent", len(seen), len(events))
	}
}

func TestAMQPWrongPasswordIsNotShown(t *testing.T) {
	t.Parallel()
	b := setupAMQP(t)
	u, _ := url.Parse(b.publisherURL)
	u.User = url.UserPassword(u.User.Username(), "wr0ng-s3cret")
	_, err := broker.Open(t.Context(), u.String())
	if err == nil {
		t.Fatal("Open with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wr0ng-s3cret") {
		t.Errorf("the error shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), "403") {
		t.Errorf("the error does not say the credentials were refused: %v", err)
	}
}
