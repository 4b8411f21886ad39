package broker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/asyncreply/asyncreply/notify"
)

// A Publisher is a notify.Sender to a message broker, holding a connection to it
// until Close. Its Send may be called from several goroutines.
type Publisher interface {
	notify.Sender
	// Close ends the connection to the broker; Send returns ErrClosed
	// afterwards.
	Close() error
}

// Errors a Publisher's Send wraps, for errors.Is.
var (
	// ErrUnroutable is returned when the broker accepted the connection but
	// had nowhere to keep the event: no JetStream stream captures the
	// subject, or no queue is bound to the exchange for the routing key.
	// Sending again helps only once the broker is configured.
	ErrUnroutable = errors.New("notify: the broker has no stream or queue for the event")
	// ErrRejected is returned when the broker refused to take the event
	// (a RabbitMQ negative acknowledgement).
	ErrRejected = errors.New("notify: the broker rejected the event")
	// ErrClosed is returned by Send after Close.
	ErrClosed = errors.New("notify: publisher closed")
)

// Open connects to the broker that rawURL names and returns a
// Publisher of events to it. It fails when the broker is unreachable, refuses
// the credentials, or has nowhere to put the events yet, so that a
// misconfiguration is seen when the process starts rather than at the first
// completion.
//
// NATS JetStream, one subject (see NATSConfig):
//
//	nats://[user:password@]host[:4222]/SUBJECT[?create_stream=true]
//
// RabbitMQ, one exchange (see AMQPConfig); amqps:// for TLS:
//
//	amqp://[user:password@]host[:5672]/EXCHANGE[?vhost=VHOST][&routing_key=KEY]
//
// The path names the subject or the exchange, not an AMQP virtual host as
// in RabbitMQ's own URIs: the virtual host is the vhost parameter, "/"
// when absent. The routing key is each event's type (for example
// asyncreply.operation.succeeded) unless routing_key is given.
// create_stream=true creates a stream for the subject when none captures
// it, for development; production streams are provisioned by their
// operators, with the retention they choose.
//
// Errors never contain the URL's password.
func Open(ctx context.Context, rawURL string) (Publisher, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse quotes the whole URL, password included, in its error.
		return nil, errors.New("notify: publisher URL does not parse; expected nats://host:4222/SUBJECT or amqp://user:password@host:5672/EXCHANGE")
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("notify: publisher URL %s: query: %w", redactURL(u), err)
	}
	switch u.Scheme {
	case "nats":
		cfg, err := natsConfigFromURL(u, query)
		if err != nil {
			return nil, err
		}
		return OpenNATS(ctx, cfg)
	case "amqp", "amqps":
		cfg, err := amqpConfigFromURL(u, query)
		if err != nil {
			return nil, err
		}
		return OpenAMQP(ctx, cfg)
	default:
		return nil, fmt.Errorf("notify: publisher URL %s: scheme %q is not nats, amqp or amqps", redactURL(u), u.Scheme)
	}
}

// natsConfigFromURL reads nats://host:4222/SUBJECT?create_stream=true.
func natsConfigFromURL(u *url.URL, query url.Values) (NATSConfig, error) {
	if err := onlyParams(u, query, "create_stream"); err != nil {
		return NATSConfig{}, err
	}
	subject := strings.TrimPrefix(u.Path, "/")
	if subject == "" {
		return NATSConfig{}, fmt.Errorf("notify: nats URL needs a subject: nats://%s/SUBJECT", u.Host)
	}
	cfg := NATSConfig{URL: serverURL(u), Subject: subject}
	if v := query.Get("create_stream"); v != "" {
		create, err := strconv.ParseBool(v)
		if err != nil {
			return NATSConfig{}, fmt.Errorf("notify: nats URL %s: create_stream=%q is not true or false", redactURL(u), v)
		}
		cfg.CreateStream = create
	}
	return cfg, cfg.validate()
}

// amqpConfigFromURL reads amqp://user:password@host:5672/EXCHANGE?vhost=V&routing_key=K.
func amqpConfigFromURL(u *url.URL, query url.Values) (AMQPConfig, error) {
	if err := onlyParams(u, query, "vhost", "routing_key"); err != nil {
		return AMQPConfig{}, err
	}
	exchange := strings.TrimPrefix(u.Path, "/")
	if exchange == "" {
		return AMQPConfig{}, fmt.Errorf("notify: amqp URL needs an exchange: %s://%s/EXCHANGE", u.Scheme, u.Host)
	}
	if strings.Contains(exchange, "/") {
		return AMQPConfig{}, fmt.Errorf("notify: amqp URL %s: the path is one exchange name; give a virtual host as ?vhost=", redactURL(u))
	}
	cfg := AMQPConfig{
		URL:        serverURL(u),
		Exchange:   exchange,
		VHost:      query.Get("vhost"),
		RoutingKey: query.Get("routing_key"),
	}
	return cfg, cfg.validate()
}

// onlyParams refuses query parameters other than known, so that a typo is
// not silently ignored.
func onlyParams(u *url.URL, query url.Values, known ...string) error {
	for name := range query {
		if !slices.Contains(known, name) {
			return fmt.Errorf("notify: %s URL %s: unknown parameter %q (known: %s)", u.Scheme, redactURL(u), name, strings.Join(known, ", "))
		}
	}
	return nil
}

// serverURL is u without its path and query: the broker's address and
// credentials.
func serverURL(u *url.URL) string {
	server := *u
	server.Path, server.RawPath, server.RawQuery, server.Fragment = "", "", "", ""
	return server.String()
}

// redactURL is u fit for logs and errors: a password, or a user name given
// alone (a NATS token), is replaced by xxxxx.
func redactURL(u *url.URL) string {
	redacted := *u
	if u.User != nil {
		if _, hasPassword := u.User.Password(); hasPassword {
			redacted.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			redacted.User = url.User("xxxxx")
		}
	}
	return redacted.String()
}

// redactRawURL is redactURL for a URL string; one that does not parse is
// not shown at all.
func redactRawURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return redactURL(u)
}

// errNotOpened is Send's error on a publisher made without its Open
// function.
var errNotOpened = errors.New("notify: publisher not opened (use Open, OpenNATS or OpenAMQP)")

// checkEvent refuses an event a consumer could not deduplicate.
func checkEvent(ev *notify.Event) error {
	if ev == nil {
		return errors.New("notify: nil event")
	}
	if ev.ID == "" {
		return errors.New("notify: event without an ID")
	}
	return nil
}
