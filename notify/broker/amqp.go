package broker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/asyncreply/asyncreply/notify"
)

// Defaults of AMQPConfig's fields.
const (
	// DefaultAMQPVHost is RabbitMQ's default virtual host.
	DefaultAMQPVHost = "/"
	// DefaultAMQPDialTimeout bounds a connection's TCP, TLS and AMQP
	// handshakes when the Send's context has no sooner deadline.
	DefaultAMQPDialTimeout = 30 * time.Second
)

// AMQPConfig configures an AMQPPublisher.
type AMQPConfig struct {
	// URL is the broker, with its credentials:
	// amqp://user:password@host:5672, or amqps:// for TLS. A path in it
	// is ignored: VHost names the virtual host. Defaults to
	// amqp://guest:guest@localhost:5672.
	URL string
	// VHost is the virtual host of Exchange. Defaults to DefaultAMQPVHost.
	VHost string
	// Exchange receives every event. It must exist: OpenAMQP does not
	// declare it, as its type and bindings are the operator's. Required.
	Exchange string
	// RoutingKey is every event's routing key. Defaults to the event's
	// type (for example asyncreply.operation.succeeded), which a topic
	// exchange's bindings select on.
	RoutingKey string
	// DialTimeout bounds connecting when the context has no sooner
	// deadline. Defaults to DefaultAMQPDialTimeout.
	DialTimeout time.Duration
}

func (cfg AMQPConfig) validate() error {
	if cfg.Exchange == "" {
		return errors.New("notify: AMQPConfig.Exchange is required (the default exchange routes only to a queue by name)")
	}
	return nil
}

// AMQPPublisher publishes events to a RabbitMQ exchange, one message per
// event in the CloudEvents AMQP binding's structured content mode: the body
// is the event in the CloudEvents JSON format and the content type is
// notify.ContentType, the same bytes a webhook receives. The cloudEvents_id,
// cloudEvents_type, cloudEvents_source and cloudEvents_subject headers
// repeat those attributes (the binding allows it) for a headers exchange
// to route on without parsing the body.
//
// Messages are persistent, their message ID is the event's ID, and they
// are published mandatory with publisher confirms: Send returns nil only
// once the broker confirmed it, and an error when it nacked the message or
// returned it as unroutable (ErrUnroutable: no queue bound for the routing
// key).
//
// Sends take turns on one channel, each waiting for its confirmation
// before the next publishes, which is what lets a returned message be
// told apart without doubt. When the connection or the channel closes, the
// next Send dials again. A Send whose context ends while it waits on the
// broker abandons the connection, so that nothing outlives its context.
type AMQPPublisher struct {
	cfg AMQPConfig
	uri string // cfg.URL with VHost

	// turn is held by the Send (or Close) using session; a channel rather
	// than a mutex so that waiting for it ends with the context.
	turn    chan struct{}
	session *amqpSession
	closed  bool
}

// amqpSession is one connection with its confirming channel.
type amqpSession struct {
	raw     net.Conn // under conn; closing it aborts every call on conn at once
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
	closes  chan *amqp.Error
}

// OpenAMQP connects to cfg.URL and checks that cfg.Exchange exists.
func OpenAMQP(ctx context.Context, cfg AMQPConfig) (*AMQPPublisher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	uri, err := amqpURI(cfg)
	if err != nil {
		return nil, err
	}
	p := &AMQPPublisher{cfg: cfg, uri: uri, turn: make(chan struct{}, 1)}
	s, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	// A passive declare fails when the exchange does not exist, whatever
	// its type; it also closes the channel, so it gets one of its own.
	stop := context.AfterFunc(ctx, s.abort)
	check, err := s.conn.Channel()
	if err == nil {
		err = check.ExchangeDeclarePassive(cfg.Exchange, amqp.ExchangeTopic, true, false, false, false, nil)
		if err == nil {
			err = check.Close()
		}
	}
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("notify: amqp exchange %q in virtual host %q: %w", cfg.Exchange, p.vhost(), err)
	}
	p.session = s
	return p, nil
}

// amqpURI is cfg.URL with cfg.VHost as its path, as amqp091 reads it.
func amqpURI(cfg AMQPConfig) (string, error) {
	raw := cfg.URL
	if raw == "" {
		raw = "amqp://guest:guest@localhost:5672"
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "" {
		return "", errors.New("notify: AMQPConfig.URL is not amqp://user:password@host:5672 or amqps://…")
	}
	uri, err := amqp.ParseURI(serverURL(u))
	if err != nil {
		return "", fmt.Errorf("notify: amqp URL %s does not parse", redactURL(u))
	}
	uri.Vhost = cfg.VHost
	if uri.Vhost == "" {
		uri.Vhost = DefaultAMQPVHost
	}
	return uri.String(), nil
}

func (p *AMQPPublisher) vhost() string {
	if p.cfg.VHost == "" {
		return DefaultAMQPVHost
	}
	return p.cfg.VHost
}

// dial opens a connection and a confirming channel on it, aborted when ctx
// ends first.
func (p *AMQPPublisher) dial(ctx context.Context) (*amqpSession, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &amqpSession{}
	var rawMu sync.Mutex
	aborted := false
	stop := context.AfterFunc(ctx, func() {
		rawMu.Lock()
		defer rawMu.Unlock()
		aborted = true
		if s.raw != nil {
			s.raw.Close()
		}
	})
	defer stop()
	timeout := p.cfg.DialTimeout
	if timeout <= 0 {
		timeout = DefaultAMQPDialTimeout
	}
	// The context's end closes the connection (above), so that the
	// error is the context's; the deadline bounds a context without one.
	deadline := time.Now().Add(timeout)
	conn, err := amqp.DialConfig(p.uri, amqp.Config{
		Properties: amqp.Table{"connection_name": "asyncreply"},
		Dial: func(network, addr string) (net.Conn, error) {
			raw, err := (&net.Dialer{Deadline: deadline}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			rawMu.Lock()
			defer rawMu.Unlock()
			if aborted {
				raw.Close()
				return nil, ctx.Err()
			}
			s.raw = raw
			// amqp091 clears the deadline once the handshake is done.
			return raw, raw.SetDeadline(deadline)
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("notify: connecting to %s: %w", redactRawURL(p.uri), err)
	}
	s.conn = conn
	if s.ch, err = conn.Channel(); err == nil {
		err = s.ch.Confirm(false)
	}
	if err != nil {
		s.close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("notify: opening a confirming channel on %s: %w", redactRawURL(p.uri), err)
	}
	// One slot each is enough: a Send publishes one message at a time and
	// reads its return, if any, before the next. The broker sends a
	// message's return before its confirmation, and amqp091 delivers
	// both in that order.
	s.returns = s.ch.NotifyReturn(make(chan amqp.Return, 1))
	s.closes = s.ch.NotifyClose(make(chan *amqp.Error, 1))
	return s, nil
}

// abort ends the session at once, without the closing handshake a broker
// that stopped answering would never complete.
func (s *amqpSession) abort() {
	if s.raw != nil {
		s.raw.Close()
	}
}

// close ends the session politely, within a bound.
func (s *amqpSession) close() {
	if s.conn != nil {
		s.conn.CloseDeadline(time.Now().Add(5 * time.Second))
	}
	s.abort()
}

// usable reports whether neither the channel nor the connection closed.
func (s *amqpSession) usable() bool {
	return s != nil && !s.conn.IsClosed() && !s.ch.IsClosed()
}

// Send publishes ev and waits for the broker's confirmation. When the
// connection turns out to have been lost since the last Send (a broker
// restart, an idle connection cut), Send dials again and publishes once
// more: the broker may then hold the event twice, which consumers drop by
// ID as they drop every redelivery.
func (p *AMQPPublisher) Send(ctx context.Context, ev *notify.Event) error {
	if err := checkEvent(ev); err != nil {
		return err
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("notify: encoding event %s: %w", ev.ID, err)
	}
	key := cmp.Or(p.cfg.RoutingKey, ev.Type)
	headers := amqp.Table{
		"cloudEvents_specversion": ev.SpecVersion,
		"cloudEvents_id":          ev.ID,
		"cloudEvents_type":        ev.Type,
		"cloudEvents_source":      ev.Source,
	}
	if ev.Subject != "" {
		headers["cloudEvents_subject"] = ev.Subject
	}
	msg := amqp.Publishing{
		ContentType:  notify.ContentType,
		DeliveryMode: amqp.Persistent,
		MessageId:    ev.ID,
		Timestamp:    ev.Time,
		Type:         ev.Type,
		AppId:        "asyncreply",
		Headers:      headers,
		Body:         body,
	}

	if p.turn == nil {
		return errNotOpened
	}
	select {
	case p.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.turn }()
	if p.closed {
		return ErrClosed
	}
	for retried := false; ; retried = true {
		fresh := false
		if !p.session.usable() {
			p.discard()
			if p.session, err = p.dial(ctx); err != nil {
				return err
			}
			fresh = true
		}
		err = p.publish(ctx, p.session, key, msg)
		if err == nil || fresh || retried || !errors.Is(err, errConnectionLost) {
			if err != nil {
				err = fmt.Errorf("notify: publishing event %s to amqp exchange %q: %w", ev.ID, p.cfg.Exchange, err)
			}
			return err
		}
	}
}

// errConnectionLost marks a publish that failed because the connection
// had closed, which a fresh connection may not.
var errConnectionLost = errors.New("connection lost")

// publish sends msg on s and waits for its confirmation. It discards the
// session unless the channel is known to be fine.
func (p *AMQPPublisher) publish(ctx context.Context, s *amqpSession, key string, msg amqp.Publishing) error {
	// Writing may block when the broker stops reading (a memory alarm);
	// the context's end aborts the connection under it.
	stop := context.AfterFunc(ctx, s.abort)
	confirm, err := s.ch.PublishWithDeferredConfirmWithContext(ctx, p.cfg.Exchange, key, true, false, msg)
	if err == nil {
		select {
		case <-confirm.Done():
		case <-ctx.Done():
		}
	}
	aborted := !stop()
	if aborted {
		p.discard()
	}
	if ctx.Err() != nil && (err != nil || !confirmed(confirm) || !confirm.Acked()) {
		p.discard()
		return ctx.Err()
	}
	if err != nil {
		lost := s.conn.IsClosed()
		p.discard()
		if lost {
			return fmt.Errorf("%w: %w", errConnectionLost, err)
		}
		return err
	}
	select {
	case ret := <-s.returns:
		if ret.MessageId == msg.MessageId {
			return fmt.Errorf("%w: no queue is bound to exchange %q for routing key %q (%d %s)",
				ErrUnroutable, p.cfg.Exchange, key, ret.ReplyCode, ret.ReplyText)
		}
	default:
	}
	if confirm.Acked() {
		return nil
	}
	// A channel that closed fails its outstanding confirmations; its
	// reason says why: the exchange deleted since, or the connection lost.
	var reason error = errors.New("channel closed before the broker confirmed")
	select {
	case closed := <-s.closes:
		if closed != nil {
			reason = closed
		}
	default:
		if s.usable() {
			return fmt.Errorf("%w: exchange %q nacked it", ErrRejected, p.cfg.Exchange)
		}
	}
	lost := s.conn.IsClosed()
	p.discard()
	if lost {
		return fmt.Errorf("%w: %w", errConnectionLost, reason)
	}
	return reason
}

// confirmed reports whether the broker answered confirm, ack or nack.
func confirmed(confirm *amqp.DeferredConfirmation) bool {
	select {
	case <-confirm.Done():
		return true
	default:
		return false
	}
}

// discard drops the session, so that the next Send dials again. The
// caller holds the turn.
func (p *AMQPPublisher) discard() {
	if p.session != nil {
		p.session.abort()
		p.session = nil
	}
}

// Close waits for the Send in flight, if any, and closes the connection.
func (p *AMQPPublisher) Close() error {
	if p.turn == nil {
		return nil
	}
	p.turn <- struct{}{}
	defer func() { <-p.turn }()
	p.closed = true
	if p.session != nil {
		p.session.close()
		p.session = nil
	}
	return nil
}
