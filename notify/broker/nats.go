package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/asyncreply/asyncreply/notify"
)

// NATSConfig configures a NATSPublisher.
type NATSConfig struct {
	// URL is the NATS server, with its credentials if any:
	// nats://user:password@host:4222. Several servers of one cluster are
	// separated by commas. Defaults to nats.DefaultURL
	// (nats://127.0.0.1:4222).
	URL string
	// Subject is where every event is published. A JetStream stream must
	// capture it: Send returns nil only once that stream has stored the
	// event. Required.
	Subject string
	// CreateStream creates a stream capturing Subject when none does, with
	// JetStream's defaults (file storage, no limits, a two-minute duplicate
	// window). For development: in production a stream's retention is the
	// operator's decision, and a missing stream is a configuration error
	// that OpenNATS reports. Defaults to false.
	CreateStream bool
}

func (cfg NATSConfig) validate() error {
	if cfg.Subject == "" {
		return errors.New("notify: NATSConfig.Subject is required")
	}
	if strings.ContainsAny(cfg.Subject, " \t\r\n*>") || strings.HasPrefix(cfg.Subject, ".") ||
		strings.HasSuffix(cfg.Subject, ".") || strings.Contains(cfg.Subject, "..") {
		return fmt.Errorf("notify: NATS subject %q is not a literal subject (tokens separated by dots, no wildcards)", cfg.Subject)
	}
	return nil
}

// NATSPublisher publishes events to a NATS JetStream subject, one message
// per event in the CloudEvents NATS binding's structured content mode: the
// payload is the event in the CloudEvents JSON format and the Content-Type
// header is notify.ContentType. Structured mode keeps the message byte for byte
// what a webhook receives, parsed by the same code, and carries the event's
// time and data content type without header percent-encoding.
//
// Each message's Nats-Msg-Id header is the event's ID, so that the stream
// drops a redelivery within its duplicate window (two minutes unless the
// stream says otherwise); consumers drop later ones by ID.
//
// The connection reconnects by itself, without limit, buffering what is
// sent meanwhile. A Send waits for the stream's acknowledgement until its
// context ends, publishing again when the connection comes back from a
// loss, as what it wrote may have gone down with the old socket; the
// stream drops the copy by its Nats-Msg-Id.
type NATSPublisher struct {
	cfg NATSConfig

	mu     sync.Mutex
	conn   *nats.Conn
	js     jetstream.JetStream
	closed bool
	// reconnected is closed, and replaced, when the connection comes back
	// after a loss: what was published just before may have gone down with
	// the old socket, so Sends waiting for an acknowledgement publish again.
	reconnected chan struct{}
}

// OpenNATS connects to cfg.URL and checks that a stream captures
// cfg.Subject, creating one if cfg.CreateStream is set.
func OpenNATS(ctx context.Context, cfg NATSConfig) (*NATSPublisher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &NATSPublisher{cfg: cfg}
	js, _, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	stream, err := js.StreamNameBySubject(ctx, cfg.Subject)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound) && cfg.CreateStream:
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:     natsStreamName(cfg.Subject),
			Subjects: []string{cfg.Subject},
		})
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("notify: creating a NATS stream for subject %q: %w", cfg.Subject, err)
		}
	case errors.Is(err, jetstream.ErrStreamNotFound):
		p.Close()
		return nil, fmt.Errorf("%w: no JetStream stream captures subject %q on %s; create one (nats stream add --subjects %s) or, for development, add ?create_stream=true",
			ErrUnroutable, cfg.Subject, redactRawURL(p.url()), cfg.Subject)
	case err != nil:
		p.Close()
		return nil, fmt.Errorf("notify: looking up the NATS stream of subject %q: %w", cfg.Subject, err)
	case stream == "":
		p.Close()
		return nil, fmt.Errorf("%w: no JetStream stream captures subject %q", ErrUnroutable, cfg.Subject)
	}
	return p, nil
}

// natsStreamName derives a stream name from a subject: stream names may not
// contain dots.
func natsStreamName(subject string) string {
	return strings.ToUpper(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, subject))
}

func (p *NATSPublisher) url() string {
	if p.cfg.URL == "" {
		return nats.DefaultURL
	}
	return p.cfg.URL
}

// connect returns the JetStream context and the channel closed at the next
// reconnection, dialling again when the connection was closed for good (its
// reconnect attempts are unbounded, so only a fatal server error such as
// revoked credentials does that).
func (p *NATSPublisher) connect(ctx context.Context) (jetstream.JetStream, <-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, ErrClosed
	}
	if p.conn != nil && !p.conn.IsClosed() {
		return p.js, p.reconnected, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	p.reconnected = make(chan struct{})
	conn, err := nats.Connect(p.url(), nats.Name("asyncreply"), nats.MaxReconnects(-1),
		nats.ReconnectHandler(func(*nats.Conn) {
			p.mu.Lock()
			defer p.mu.Unlock()
			close(p.reconnected)
			p.reconnected = make(chan struct{})
		}))
	if err != nil {
		return nil, nil, fmt.Errorf("notify: connecting to NATS at %s: %w", redactRawURL(p.url()), err)
	}
	js, err := jetstream.New(conn)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("notify: NATS JetStream at %s: %w", redactRawURL(p.url()), err)
	}
	p.conn, p.js = conn, js
	return js, p.reconnected, nil
}

// Send publishes ev and waits for the stream's acknowledgement. A
// duplicate the stream dropped is acknowledged too: the stream has the
// event.
func (p *NATSPublisher) Send(ctx context.Context, ev *notify.Event) error {
	if err := checkEvent(ev); err != nil {
		return err
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("notify: encoding event %s: %w", ev.ID, err)
	}
	if p.cfg.Subject == "" {
		return errNotOpened
	}
	msg := &nats.Msg{Subject: p.cfg.Subject, Data: body, Header: nats.Header{}}
	msg.Header.Set("Content-Type", notify.ContentType)
	for {
		js, reconnected, err := p.connect(ctx)
		if err != nil {
			return err
		}
		err = publishUntilReconnected(ctx, js, msg, ev.ID, reconnected)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("notify: publishing event %s to NATS subject %q: %w", ev.ID, p.cfg.Subject, ctx.Err())
		case errors.Is(err, errReconnected):
			continue // Nats-Msg-Id makes publishing again safe.
		case errors.Is(err, jetstream.ErrNoStreamResponse):
			return fmt.Errorf("%w: no JetStream stream captures subject %q (event %s)", ErrUnroutable, p.cfg.Subject, ev.ID)
		default:
			return fmt.Errorf("notify: publishing event %s to NATS subject %q: %w", ev.ID, p.cfg.Subject, err)
		}
	}
}

// errReconnected marks a publish abandoned because the connection came back
// from a loss while it waited.
var errReconnected = errors.New("reconnected while waiting for the acknowledgement")

// publishUntilReconnected publishes msg and waits for the stream's
// acknowledgement until ctx ends or reconnected is closed.
func publishUntilReconnected(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, id string, reconnected <-chan struct{}) error {
	attempt, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-reconnected:
			cancel(errReconnected)
		case <-stop:
		}
	}()
	// WithMsgID sets Nats-Msg-Id.
	_, err := js.PublishMsg(attempt, msg, jetstream.WithMsgID(id))
	if err != nil && context.Cause(attempt) == errReconnected {
		return errReconnected
	}
	return err
}

// Close closes the connection. Sends in flight fail.
func (p *NATSPublisher) Close() error {
	p.mu.Lock()
	p.closed = true
	conn := p.conn
	p.mu.Unlock()
	// Outside the lock, which the reconnect handler takes.
	if conn != nil {
		conn.Close()
	}
	return nil
}
