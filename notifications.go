package asyncreply

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/notify"
)

// Defaults of NotifyConfig's fields.
const (
	// DefaultDeliveryTimeout bounds one delivery attempt.
	DefaultDeliveryTimeout = 10 * time.Second
	// DefaultRetryDelay is the wait after a delivery's first failed
	// attempt; it doubles after each further one, up to
	// DefaultMaxRetryDelay: 5 s, 10 s, 20 s, … 1 h, 1 h, …
	DefaultRetryDelay = 5 * time.Second
	// DefaultMaxRetryDelay caps the wait between two attempts.
	DefaultMaxRetryDelay = time.Hour
	// DefaultGiveUpAfter is how long after the transition a delivery is
	// still attempted: the default schedule makes about 30 attempts in it.
	// It should not exceed the operation's retention: a delivery whose
	// operation has been swept is given up.
	DefaultGiveUpAfter = 24 * time.Hour

	// maxCallbackURL bounds a client's Prefer: callback URL.
	maxCallbackURL = 2048
)

// NotifyConfig configures the delivery of operations' terminal transitions
// (Succeeded, Failed, Canceled before finishing) without polling: signed
// webhooks and broker publishers. Each delivery is a CloudEvents event
// (notify.Event) whose data is the operation's status document.
//
// Deliveries need a backend that implements backend.Notifier (memory,
// SQLite and PostgreSQL do); with one that does not, nothing is delivered
// and Prefer: callback is ignored. They are at least once: SQLite and
// PostgreSQL store them with the transition, in the same transaction, and
// retry them across restarts; the in-memory backend retries them in the
// process, and loses those pending when it exits. Deliveries run in the
// processes that execute operations, which need the same NotifyConfig as
// those that accept them.
//
// A failed attempt — a network error, an answer other than 2xx, a redirect
// (never followed) — is retried after RetryDelay, doubling up to
// MaxRetryDelay, until GiveUpAfter has passed since the transition. A
// webhook whose URL resolves to a refused address is never sent, and not
// retried.
type NotifyConfig struct {
	// Secrets sign every webhook per Standard Webhooks, each
	// "whsec_" + base64 (notify.ParseSecret); each secret signs, so that
	// receivers can move from one to the next. Webhooks need at least one:
	// without, URL, CallbackHosts and RouteOptions.Notify are refused.
	Secrets []string

	// URL is a webhook called for the operations of every route that sets
	// no RouteOptions.Notify of its own. It is the operator's: it is never
	// shown to clients, as it may be an internal address. Defaults to "":
	// none.
	URL string

	// CallbackHosts are the hosts a client may name in Prefer: callback;
	// url="https://…" (OData 4.01), compared with the URL's host name (or
	// host:port) case-insensitively. An accepted callback is echoed in
	// Preference-Applied and its deliveries shown in the status document's
	// callbacks; any other is ignored, and not echoed. Defaults to none:
	// the preference is always ignored.
	CallbackHosts []string

	// AllowNetworks are the networks webhooks may reach although they are
	// refused by default (loopback, private, link-local with the cloud
	// metadata address, CGNAT, multicast, unspecified; see
	// notify.WebhookConfig). The check is on the address being dialed, so
	// DNS rebinding cannot pass it. Defaults to none.
	AllowNetworks []netip.Prefix

	// Publish are process-wide destinations every operation's transitions
	// are delivered to, through the same durable outbox as webhooks: a
	// NATS subject, a RabbitMQ exchange. Their names are stored with each
	// operation at its creation; a process executing operations delivers to
	// the Sender it is given under that name. Defaults to none.
	Publish []NamedSender

	// Timeout bounds one delivery attempt. Defaults to
	// DefaultDeliveryTimeout.
	Timeout time.Duration
	// RetryDelay is the wait after a first failed attempt. Defaults to
	// DefaultRetryDelay.
	RetryDelay time.Duration
	// MaxRetryDelay caps the wait between attempts. Defaults to
	// DefaultMaxRetryDelay.
	MaxRetryDelay time.Duration
	// GiveUpAfter is how long after the transition attempts go on.
	// Defaults to DefaultGiveUpAfter.
	GiveUpAfter time.Duration
}

// NamedSender is a publisher every operation's transitions are delivered
// to. Name identifies it in the stored operations, so it must stay the
// same across restarts and be the same in every process sharing the
// backend.
type NamedSender struct {
	Name   string
	Sender notify.Sender
}

// validate reports NotifyConfig's invalid fields through invalid, and
// fills in its defaults.
func (c *NotifyConfig) validate(invalid func(field, format string, args ...any)) {
	for _, s := range c.Secrets {
		if _, err := notify.ParseSecret(s); err != nil {
			invalid("Notify.Secrets", "%v", err)
		}
	}
	if c.URL != "" {
		if err := notify.CheckURL(c.URL); err != nil {
			invalid("Notify.URL", "%v", err)
		}
	}
	if len(c.Secrets) == 0 && c.URL != "" {
		invalid("Notify.URL", "webhooks need Notify.Secrets to be signed")
	}
	if len(c.Secrets) == 0 && len(c.CallbackHosts) > 0 {
		invalid("Notify.CallbackHosts", "webhooks need Notify.Secrets to be signed")
	}
	names := make(map[string]bool)
	for _, p := range c.Publish {
		switch {
		case p.Name == "" || strings.ContainsAny(p.Name, " \t"):
			invalid("Notify.Publish", "a publisher's name must be non-empty and without spaces, got %q", p.Name)
		case p.Sender == nil:
			invalid("Notify.Publish", "publisher %q has no Sender", p.Name)
		case names[p.Name]:
			invalid("Notify.Publish", "publisher name %q is used twice", p.Name)
		}
		names[p.Name] = true
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"Notify.Timeout", c.Timeout}, {"Notify.RetryDelay", c.RetryDelay}, {"Notify.MaxRetryDelay", c.MaxRetryDelay}, {"Notify.GiveUpAfter", c.GiveUpAfter}} {
		if f.d < 0 {
			invalid(f.name, "must not be negative, got %s", f.d)
		}
	}
	c.Timeout = cmp.Or(c.Timeout, DefaultDeliveryTimeout)
	c.RetryDelay = cmp.Or(c.RetryDelay, DefaultRetryDelay)
	c.MaxRetryDelay = cmp.Or(c.MaxRetryDelay, DefaultMaxRetryDelay)
	c.GiveUpAfter = cmp.Or(c.GiveUpAfter, DefaultGiveUpAfter)
}

// notifications is a Middleware's side of deliveries.
type notifications struct {
	notifier   backend.Notifier // the backend's, nil when it delivers nothing
	webhooks   *notify.Webhooks // nil without secrets
	publishers map[string]notify.Sender
}

func newNotifications(cfg Config, b backend.Backend) (notifications, error) {
	var n notifications
	n.notifier, _ = b.(backend.Notifier)
	if len(cfg.Notify.Secrets) > 0 {
		w, err := notify.NewWebhooks(notify.WebhookConfig{
			Secrets: cfg.Notify.Secrets, AllowNetworks: cfg.Notify.AllowNetworks, Timeout: cfg.Notify.Timeout,
		})
		if err != nil {
			return n, &ConfigError{Field: "Notify.Secrets", Err: err}
		}
		n.webhooks = w
	}
	if len(cfg.Notify.Publish) > 0 {
		n.publishers = make(map[string]notify.Sender)
		for _, p := range cfg.Notify.Publish {
			n.publishers[p.Name] = p.Sender
		}
	}
	if n.notifier == nil && n.configured() {
		cfg.Logger.Warn("asyncreply: the backend does not implement backend.Notifier; webhooks and publishers are not delivered")
	}
	return n, nil
}

// configured reports whether anything may be delivered.
func (n notifications) configured() bool { return n.webhooks != nil || len(n.publishers) > 0 }

// Kinds of targets, as stored with an operation: "kind base destination",
// where base is the absolute monitor prefix the event's links and source
// are made of, known only when the operation is accepted.
const (
	targetCallback = "callback" // a client's Prefer: callback URL, shown in the status document
	targetNotify   = "notify"   // the route's configured webhook, never shown
	targetPublish  = "publish"  // a publisher's name
)

type target struct{ kind, base, dest string }

func (t target) String() string { return t.kind + " " + t.base + " " + t.dest }

func parseTarget(s string) (target, bool) {
	parts := strings.SplitN(s, " ", 3)
	if len(parts) != 3 {
		return target{}, false
	}
	return target{parts[0], parts[1], parts[2]}, true
}

// targets returns the targets of a new operation of r on a route with
// opts, and the client's callback target when it was accepted.
func (m *Middleware) targets(r *http.Request, opts RouteOptions) (targets []string, callback string) {
	if m.notes.notifier == nil {
		return nil, ""
	}
	base := m.origin(r) + m.cfg.Prefix
	if u, ok := m.acceptedCallback(r); ok {
		callback = target{targetCallback, base, u}.String()
		targets = append(targets, callback)
	}
	if u := cmp.Or(opts.Notify, m.cfg.Notify.URL); u != "" {
		if m.notes.webhooks == nil {
			m.cfg.Logger.Error("asyncreply: a route's notify URL needs Config.Notify.Secrets to be signed; not delivering", "path", r.URL.Path)
		} else {
			targets = append(targets, target{targetNotify, base, u}.String())
		}
	}
	for _, p := range m.cfg.Notify.Publish {
		targets = append(targets, target{targetPublish, base, p.Name}.String())
	}
	return targets, callback
}

// acceptedCallback returns the request's Prefer: callback URL when its
// host is allowed.
func (m *Middleware) acceptedCallback(r *http.Request) (string, bool) {
	raw := parsePrefer(r.Header).callback
	if raw == "" || len(raw) > maxCallbackURL || m.notes.webhooks == nil {
		return "", false
	}
	u, err := url.Parse(raw)
	if err != nil || notify.CheckURL(raw) != nil || u.User != nil {
		return "", false
	}
	allowed := slices.ContainsFunc(m.cfg.Notify.CallbackHosts, func(h string) bool {
		return strings.EqualFold(h, u.Hostname()) || strings.EqualFold(h, u.Host)
	})
	return u.String(), allowed
}

// deliver is the backend.DeliverFunc: one attempt at delivering the
// transition d records to its target, with the operation's status
// document as it is now.
func (m *Middleware) deliver(ctx context.Context, d backend.Delivery) backend.DeliveryResult {
	var status int
	giveUp := func(err error) backend.DeliveryResult {
		m.cfg.Logger.Warn("asyncreply: giving up a delivery", "operation", d.OperationID, "target", describeTarget(d.Target), "attempts", d.Attempts+1, "error", err)
		return backend.DeliveryResult{Err: err, Status: status, At: m.cfg.now()}
	}
	t, ok := parseTarget(d.Target)
	if !ok {
		return giveUp(errors.New("malformed target"))
	}
	op, err := m.cfg.Backend.Get(ctx, d.OperationID)
	if errors.Is(err, backend.ErrNotFound) {
		return giveUp(errors.New("the operation is gone"))
	}
	if err != nil {
		return backend.DeliveryResult{Err: err, RetryAfter: m.retryDelay(d.Attempts), At: m.cfg.now()}
	}
	ev := m.event(op, d.Status, t.base)
	attemptCtx, cancel := context.WithTimeout(ctx, m.cfg.Notify.Timeout)
	defer cancel()
	switch t.kind {
	case targetCallback, targetNotify:
		if m.notes.webhooks == nil {
			return giveUp(errors.New("webhooks are not configured in this process (Config.Notify.Secrets)"))
		}
		status, err = m.notes.webhooks.Post(attemptCtx, t.dest, ev)
	case targetPublish:
		sender := m.notes.publishers[t.dest]
		if sender == nil {
			return giveUp(fmt.Errorf("no publisher named %q in this process", t.dest))
		}
		err = sender.Send(attemptCtx, ev)
	default:
		return giveUp(fmt.Errorf("unknown target kind %q", t.kind))
	}
	now := m.cfg.now()
	result := backend.DeliveryResult{Status: status, Err: err, At: now}
	if err != nil && t.kind == targetCallback {
		// The client sees what its callback's attempts brought, but not
		// what the network told us on the way (resolved addresses, which
		// would let it map names it cannot resolve itself); the log has it.
		result.Err = errors.New(clientReason(err))
	}
	switch {
	case err == nil:
		m.cfg.Logger.Debug("asyncreply: delivered", "operation", op.ID, "target", describeTarget(d.Target), "status", status)
		return result
	case errors.Is(err, notify.ErrAddressNotAllowed):
		m.cfg.Logger.Warn("asyncreply: refused a webhook to an address that is not allowed; see Config.Notify.AllowNetworks",
			"operation", op.ID, "target", describeTarget(d.Target), "error", err)
		return result
	}
	delay := m.retryDelay(d.Attempts)
	if now.Add(delay).After(op.UpdatedAt.Add(m.cfg.Notify.GiveUpAfter)) {
		gaveUp := giveUp(err)
		gaveUp.Err = result.Err
		return gaveUp
	}
	m.cfg.Logger.Info("asyncreply: a delivery attempt failed; retrying", "operation", op.ID, "target", describeTarget(d.Target),
		"attempt", d.Attempts+1, "retry_in", delay, "error", err)
	result.RetryAfter = delay
	return result
}

// clientReason is what the status document says of a failed attempt at a
// client's callback.
func clientReason(err error) string {
	var statusErr *notify.StatusError
	var netErr net.Error
	switch {
	case errors.Is(err, notify.ErrAddressNotAllowed):
		return "the callback's address is not allowed"
	case errors.As(err, &statusErr):
		return fmt.Sprintf("the callback answered %d", statusErr.Code)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "the callback did not answer in time"
	default:
		return "the callback could not be reached"
	}
}

// retryDelay is the wait after a failed attempt when attempts were made
// before it.
func (m *Middleware) retryDelay(attempts int) time.Duration {
	delay := m.cfg.Notify.RetryDelay
	for range min(attempts, 40) {
		if delay >= m.cfg.Notify.MaxRetryDelay {
			break
		}
		delay *= 2
	}
	return min(delay, m.cfg.Notify.MaxRetryDelay)
}

// describeTarget names a target in logs without the credentials a URL may
// carry.
func describeTarget(s string) string {
	t, ok := parseTarget(s)
	if !ok {
		return "?"
	}
	if t.kind == targetPublish {
		return t.kind + " " + t.dest
	}
	u, err := url.Parse(t.dest)
	if err != nil {
		return t.kind
	}
	u.User, u.RawQuery = nil, ""
	return t.kind + " " + u.String()
}

// eventTypes are the CloudEvents types of the terminal statuses.
var eventTypes = map[backend.Status]string{
	backend.Succeeded: notify.TypeSucceeded,
	backend.Failed:    notify.TypeFailed,
	backend.Canceled:  notify.TypeCanceled,
}

// event is the CloudEvent of op's transition to status: its ID is the same
// for every delivery of the transition, its data the status document with
// absolute links under base.
func (m *Middleware) event(op *backend.Operation, status backend.Status, base string) *notify.Event {
	self := base + op.ID
	doc := newStatusDocument(op, monitorURLs{Self: self, Response: self + "/response", Events: self + "/events"})
	return &notify.Event{
		SpecVersion:     notify.SpecVersion,
		ID:              op.ID + ":" + strings.ToLower(string(status)),
		Source:          cmp.Or(base, m.cfg.Prefix),
		Type:            eventTypes[status],
		Subject:         op.ID,
		Time:            op.UpdatedAt.UTC(),
		DataContentType: "application/json",
		Data:            doc.marshal(),
	}
}

// callbackDocs are the status document's callbacks: the deliveries of the
// callbacks the client asked for, never the operator's targets.
func (m *Middleware) callbackDocs(ctx context.Context, op *backend.Operation) []callbackDoc {
	var docs []callbackDoc
	for _, s := range op.Targets {
		if t, ok := parseTarget(s); ok && t.kind == targetCallback {
			docs = append(docs, callbackDoc{URL: t.dest, target: s})
		}
	}
	if len(docs) == 0 || !op.Status.Done() || m.notes.notifier == nil {
		return docs
	}
	ctx, cancel := storeContext(ctx)
	defer cancel()
	deliveries, err := m.notes.notifier.Deliveries(ctx, op.ID)
	if err != nil {
		m.cfg.Logger.Warn("asyncreply: reading an operation's deliveries failed", "operation", op.ID, "error", err)
		return docs
	}
	for i := range docs {
		for _, d := range deliveries {
			if d.Target != docs[i].target {
				continue
			}
			docs[i].Attempts, docs[i].LastStatus, docs[i].LastError = d.Attempts, d.LastStatus, d.LastError
			if !d.DeliveredAt.IsZero() {
				at := d.DeliveredAt.UTC()
				docs[i].DeliveredAt = &at
			}
			docs[i].Failed = !d.GaveUpAt.IsZero()
		}
	}
	return docs
}
