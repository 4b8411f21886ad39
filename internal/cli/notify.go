package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/notify/broker"
)

// notifyOptions are the flags of deliveries without polling, the
// gateway's and the worker's: a worker delivers what it executes.
type notifyOptions struct {
	secrets       secretList
	callbackAllow stringList
	allowNetworks prefixList
	notifyURL     string
	giveUpAfter   time.Duration
	retryDelay    time.Duration
	// publish are the --publish URLs, and publishers the brokers they
	// name, opened by openPublishers before the gateway is created.
	publish    stringList
	publishers []asyncreply.NamedSender
	opened     []broker.Publisher
}

func notifyFlags(fs *command, o *notifyOptions) {
	fs.Var(&o.secrets, "webhook-secret", "`secrets` signing webhooks (Standard Webhooks), whsec_ and base64, comma-separated: each signs, for rotation; prefer ASYNCREPLY_WEBHOOK_SECRET to a flag, which other users can see in the process list")
	fs.Var(&o.callbackAllow, "callback-allow", "`host` a client may name in Prefer: callback; url=\"https://HOST/…\", called when its operation finishes; repeatable; none: the preference is ignored")
	fs.Var(&o.allowNetworks, "webhook-allow-network", "`CIDR` webhooks may reach although private, loopback or link-local (refused by default, checked on the address dialed); repeatable")
	fs.StringVar(&o.notifyURL, "notify", "", "webhook `URL` called when each operation of a route without a notify of its own finishes (a route's notify: in the config file); never shown to clients")
	fs.DurationVar(&o.giveUpAfter, "webhook-give-up", 0, "how long after an operation finished its deliveries are retried (backoff from 5s doubling to 1h), then given up; 0: 24h")
	fs.Var(&o.publish, "publish", "broker `URL` every operation's terminal transition is published to, as a CloudEvent: nats://HOST:4222/SUBJECT (JetStream) or amqp://USER:PASSWORD@HOST:5672/EXCHANGE (RabbitMQ; ?vhost=, ?routing_key=); repeatable; give every process sharing the backend the same ones")
	fs.DurationVar(&o.retryDelay, "webhook-retry", 0, "wait after a delivery's first failed attempt, doubling after each further one up to 1h; 0: 5s")
}

// config is the gateway's NotifyConfig, with the publishers opened so far.
func (o *notifyOptions) config() asyncreply.NotifyConfig {
	return asyncreply.NotifyConfig{
		Secrets:       o.secrets.values,
		CallbackHosts: o.callbackAllow.values,
		AllowNetworks: o.allowNetworks.values,
		URL:           o.notifyURL,
		GiveUpAfter:   o.giveUpAfter,
		RetryDelay:    o.retryDelay,
		Publish:       o.publishers,
	}
}

// openPublishers connects to the --publish brokers, failing at start on one
// that is unreachable or has nowhere to keep the events. Each is named by
// its URL without credentials: the name is stored with every operation, so
// it stays the same across restarts and in every process.
func (o *notifyOptions) openPublishers(ctx context.Context) error {
	for _, raw := range o.publish.values {
		p, err := broker.Open(ctx, raw)
		if err != nil {
			o.closePublishers()
			return fmt.Errorf("--publish: %w", err)
		}
		o.opened = append(o.opened, p)
		o.publishers = append(o.publishers, asyncreply.NamedSender{Name: publisherName(raw), Sender: p})
	}
	return nil
}

// closePublishers closes what openPublishers opened, once the gateway has
// shut down and publishes no more.
func (o *notifyOptions) closePublishers() {
	for _, p := range o.opened {
		p.Close()
	}
	o.opened, o.publishers = nil, nil
}

// publisherName is a --publish URL without its credentials. broker.Open
// has parsed it already.
func publisherName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.User = nil
	return u.String()
}

func init() {
	flagOf["Notify.Publish"] = "--publish"
	flagOf["Notify.Secrets"] = "--webhook-secret"
	flagOf["Notify.CallbackHosts"] = "--callback-allow"
	flagOf["Notify.AllowNetworks"] = "--webhook-allow-network"
	flagOf["Notify.URL"] = "--notify"
	flagOf["Notify.GiveUpAfter"] = "--webhook-give-up"
	flagOf["Notify.RetryDelay"] = "--webhook-retry"
}

// secretList is --webhook-secret: comma-separated secrets, never printed.
type secretList struct{ list[string] }

func (l *secretList) String() string {
	if l == nil || len(l.values) == 0 {
		return ""
	}
	return "(set)"
}

func (l *secretList) Set(v string) error {
	// Checked with the rest of the configuration, whose errors never
	// repeat a value, as the flag package's would.
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			l.add(s)
		}
	}
	return nil
}

// stringList is a repeatable flag of plain values.
type stringList struct{ list[string] }

func (l *stringList) String() string {
	if l == nil {
		return ""
	}
	return l.join(func(s string) string { return s })
}

func (l *stringList) Set(v string) error {
	if v = strings.TrimSpace(v); v == "" {
		return errors.New("must not be empty")
	}
	l.add(v)
	return nil
}
