package notify

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"
)

// Defaults of WebhookConfig's fields.
const (
	// DefaultWebhookTimeout bounds one attempt: connecting, sending, and
	// reading the answer's head.
	DefaultWebhookTimeout = 10 * time.Second
	// maxResponseRead is how much of a receiver's answer is read before
	// the connection is dropped: the status says all that matters.
	maxResponseRead = 4 << 10
)

// WebhookConfig configures Webhooks.
type WebhookConfig struct {
	// Secrets sign every webhook, each in the format ParseSecret reads;
	// each signs it, so that receivers can move from one to the next
	// (rotation). At least one is required.
	Secrets []string

	// AllowNetworks are networks webhooks may reach although they are
	// refused by default: loopback, private (RFC 1918, fc00::/7),
	// link-local (169.254.0.0/16 with the cloud metadata address,
	// fe80::/10), unspecified, multicast, carrier-grade NAT
	// (100.64.0.0/10) and the other special-purpose ranges. Allow
	// 127.0.0.0/8 and ::1/128 for a receiver on the same host. Defaults
	// to none.
	AllowNetworks []netip.Prefix

	// Timeout bounds one attempt. Defaults to DefaultWebhookTimeout.
	Timeout time.Duration
}

// Webhooks posts events to webhook URLs, signed per Standard Webhooks.
// Create it with NewWebhooks. It never follows a redirect (a 3xx is a
// failed attempt, as the receiver did not take the event), never uses an
// HTTP proxy from the environment (whose address the guard could not
// check), reads at most a few KiB of an answer, and connects only to the
// addresses WebhookConfig allows.
type Webhooks struct {
	keys    [][]byte
	client  *http.Client
	timeout time.Duration
	now     func() time.Time
}

// NewWebhooks validates cfg and returns Webhooks.
func NewWebhooks(cfg WebhookConfig) (*Webhooks, error) {
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("notify: webhooks need at least one signing secret")
	}
	w := &Webhooks{timeout: cmp.Or(max(cfg.Timeout, 0), DefaultWebhookTimeout), now: time.Now}
	for _, s := range cfg.Secrets {
		key, err := ParseSecret(s)
		if err != nil {
			return nil, err
		}
		w.keys = append(w.keys, key)
	}
	guard := addressGuard{allow: cfg.AllowNetworks}
	dialer := &net.Dialer{Timeout: w.timeout, Control: guard.control}
	w.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   w.timeout,
			ResponseHeaderTimeout: w.timeout,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return w, nil
}

// CheckURL reports whether target is a URL Webhooks can post to: absolute
// http or https with a host. Where it points is checked at connect time.
func CheckURL(target string) error {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return fmt.Errorf("notify: %q is not an absolute http or https URL", target)
	}
	return nil
}

// StatusError is a receiver's answer other than 2xx.
type StatusError struct{ Code int }

func (e *StatusError) Error() string { return "notify: the receiver answered " + strconv.Itoa(e.Code) }

// Post makes one attempt at delivering ev to target and returns the
// receiver's status code, 0 when there was none. It returns nil once the
// receiver answered 2xx; a *StatusError for any other answer; an error
// wrapping ErrAddressNotAllowed when target resolved to a refused address,
// in which case nothing was sent.
func (w *Webhooks) Post(ctx context.Context, target string, ev *Event) (int, error) {
	if err := CheckURL(target); err != nil {
		return 0, err
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return 0, fmt.Errorf("notify: encoding the event: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("notify: %w", err)
	}
	now := w.now()
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("User-Agent", "asyncreply-webhooks")
	req.Header.Set("webhook-id", ev.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", Sign(w.keys, ev.ID, now, body))
	resp, err := w.client.Do(req)
	if err != nil {
		var urlErr *url.Error // its message holds the whole URL, credentials and all
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		return 0, fmt.Errorf("notify: posting to %s: %w", redacted(req.URL), err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, &StatusError{Code: resp.StatusCode}
	}
	return resp.StatusCode, nil
}

// Sender returns a Sender that posts to target.
func (w *Webhooks) Sender(target string) Sender { return webhookSender{w, target} }

// CloseIdleConnections closes the connections kept for the next attempts.
func (w *Webhooks) CloseIdleConnections() { w.client.CloseIdleConnections() }

type webhookSender struct {
	w      *Webhooks
	target string
}

func (s webhookSender) Send(ctx context.Context, ev *Event) error {
	_, err := s.w.Post(ctx, s.target, ev)
	return err
}

// redacted is u without its user information and query, which may hold
// credentials, for errors and logs.
func redacted(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.ForceQuery = nil, "", false
	return c.String()
}
