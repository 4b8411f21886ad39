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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/asyncreply/asyncreply/notify"
	"github.com/asyncreply/asyncreply/notify/broker"
)

// natsURL is the NATS server, with JetStream, that tests use.
func natsURL() string {
	return cmp.Or(os.Getenv("NATS_URL"), "nats://127.0.0.1:4222")
}

// natsBundle is a test's own stream capturing a subject of its own.
type natsBundle struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	subject string
	// publisherURL is Open's URL of the subject.
	publisherURL string
}

// connectNATS connects the test's own client, or skips (fails in CI).
func connectNATS(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(natsURL(), nats.Timeout(5*time.Second))
	if err != nil {
		brokerUnreachable(t, "NATS", "NATS_URL", natsURL(), err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func setupNATS(t *testing.T) *natsBundle {
	t.Helper()
	js := connectNATS(t)
	name := strings.ReplaceAll(uniqueName(t), ".", "_")
	subject := "asyncreply.test." + name
	stream, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name:     name,
		Subjects: []string{subject},
		Storage:  jetstream.MemoryStorage,
	})
	if err != nil {
		t.Fatalf("creating stream (is JetStream enabled?): %v", err)
	}
	t.Cleanup(func() { deleteStream(t, js, name) })
	return &natsBundle{js: js, stream: stream, subject: subject, publisherURL: natsURLWithSubject(t, subject)}
}

func deleteStream(t *testing.T, js jetstream.JetStream, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("deleting stream %s: %v", name, err)
	}
}

func natsURLWithSubject(t *testing.T, subject string) string {
	u, err := url.Parse(natsURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + subject
	return u.String()
}

func openNATS(t *testing.T, rawURL string) broker.Publisher {
	t.Helper()
	p, err := broker.Open(t.Context(), rawURL)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// fetch reads every message of the stream from its start.
func (b *natsBundle) fetch(t *testing.T, n int) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	consumer, err := b.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for len(msgs) < n {
		batch, err := consumer.Fetch(n-len(msgs), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for msg := range batch.Messages() {
			msgs = append(msgs, msg)
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("fetching: %v after %d messages", err, len(msgs))
		}
	}
	return msgs
}

func TestNATSDeliversOneCloudEventPerSend(t *testing.T) {
	t.Parallel()
	b := setupNATS(t)
	p := openNATS(t, b.publisherURL)

	const n = 200
	events := make([]*notify.Event, n)
	for i := range events {
		events[i] = testEvent(i)
	}
	sendAll(t, p, events)
	// Redeliveries, as the outbox makes after a lost acknowledgement: the
	// stream's duplicate window drops them, and Send says the stream has
	// the event.
	sendAll(t, p, events[:10])

	msgs := b.fetch(t, n)
	seen := map[string]bool{}
	for i, msg := range msgs {
		id := eventID(t, msg.Data())
		if seen[id] {
			t.Fatalf("event %s stored twice", id)
		}
		seen[id] = true
		if id != events[i].ID {
			t.Fatalf("message %d is event %s, want %s (in order of Send)", i, id, events[i].ID)
		}
		checkCloudEvent(t, msg.Data(), events[i])
		if got := msg.Headers().Get("Content-Type"); got != notify.ContentType {
			t.Errorf("Content-Type %q, want %q (structured mode)", got, notify.ContentType)
		}
		if got := msg.Headers().Get(jetstream.MsgIDHeader); got != id {
			t.Errorf("Nats-Msg-Id %q, want the event's ID %q", got, id)
		}
		if msg.Subject() != b.subject {
			t.Errorf("subject %q, want %q", msg.Subject(), b.subject)
		}
	}
	info, err := b.stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Errorf("the stream holds %d messages after %d events and 10 redeliveries, want %d", info.State.Msgs, n, n)
	}
}

func TestNATSMissingStream(t *testing.T) {
	t.Parallel()
	js := connectNATS(t)
	subject := "asyncreply.test." + strings.ReplaceAll(uniqueName(t), ".", "_")
	_, err := broker.Open(t.Context(), natsURLWithSubject(t, subject))
	if !errors.Is(err, broker.ErrUnroutable) || !strings.Contains(err.Error(), "no JetStream stream captures subject") {
		t.Fatalf("Open with no stream = %v, want ErrUnroutable saying so", err)
	}

	// create_stream=true, for development, makes one.
	p := openNATS(t, natsURLWithSubject(t, subject)+"?create_stream=true")
	stream, err := js.StreamNameBySubject(t.Context(), subject)
	if err != nil {
		t.Fatalf("no stream after create_stream=true: %v", err)
	}
	defer deleteStream(t, js, stream)
	sendAll(t, p, []*notify.Event{testEvent(1)})

	// A stream deleted while the publisher is open.
	deleteStream(t, js, stream)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = p.Send(ctx, testEvent(2))
	if !errors.Is(err, broker.ErrUnroutable) || !strings.Contains(err.Error(), subject) {
		t.Fatalf("Send with the stream deleted = %v, want ErrUnroutable naming the subject", err)
	}
}

func TestNATSReconnectsAfterConnectionLoss(t *testing.T) {
	t.Parallel()
	b := setupNATS(t)
	u, _ := url.Parse(b.publisherURL)
	px := newProxy(t, u.Host)
	u.Host = px.addr()
	p := openNATS(t, u.String())

	sendAll(t, p, []*notify.Event{testEvent(1)})
	px.cut()
	sendAll(t, p, []*notify.Event{testEvent(2)})
	msgs := b.fetch(t, 2)
	if got := eventID(t, msgs[1].Data()); got != testEvent(2).ID {
		t.Errorf("second message is %s, want %s", got, testEvent(2).ID)
	}
}

func TestNATSSendHonoursContext(t *testing.T) {
	t.Parallel()
	b := setupNATS(t)
	u, _ := url.Parse(b.publisherURL)
	px := newProxy(t, u.Host)
	u.Host = px.addr()
	p := openNATS(t, u.String())

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := p.Send(ctx, testEvent(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Send with a canceled context = %v", err)
	}

	// The server gone for good (every new connection refused): Send ends
	// with its context.
	px.ln.Close()
	px.cut()
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := p.Send(ctx, testEvent(2)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send with the server gone = %v, want the context's deadline", err)
	}

	p.Close()
	if err := p.Send(t.Context(), testEvent(3)); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Send after Close = %v, want ErrClosed", err)
	}
}

func TestNATSConcurrentSends(t *testing.T) {
	t.Parallel()
	b := setupNATS(t)
	p := openNATS(t, b.publisherURL)
	events := make([]*notify.Event, 200)
	for i := range events {
		events[i] = testEvent(i)
	}
	sendConcurrently(t, p, events)
	seen := map[string]bool{}
	for _, msg := range b.fetch(t, len(events)) {
		seen[eventID(t, msg.Data())] = true
	}
	if len(seen) != len(events) {
		t.Errorf("%d distinct events stored of %d sent", len(seen), len(events))
	}
}
