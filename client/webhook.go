package client

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultWebhookTolerance is how far a webhook's timestamp may be from the
// receiver's clock, either way, unless VerifyWebhook is given another.
const DefaultWebhookTolerance = 5 * time.Minute

// Errors VerifyWebhook and VerifyWebhookSignature wrap, for errors.Is. A
// receiver answers a request that fails with either with 401 and does not
// act on it.
var (
	// ErrWebhookSignature is returned when the request carries no valid
	// signature by the secret: a webhook-id, webhook-timestamp or
	// webhook-signature header missing, or no signature matching the
	// body (another secret, or a body changed on the way).
	ErrWebhookSignature = errors.New("client: webhook signature does not verify")
	// ErrWebhookTimestamp is returned when the signature is valid but the
	// timestamp is outside the tolerance: a replay of an old request, or a
	// clock far off.
	ErrWebhookTimestamp = errors.New("client: webhook timestamp outside the tolerance")
)

// CloudEvent is the event an asyncreply server delivers when an operation
// ends, in webhooks and broker messages alike: a CloudEvents 1.0 event in
// its JSON format.
type CloudEvent struct {
	SpecVersion string `json:"specversion"`
	// ID is the same for every delivery of one event: deliveries are at
	// least once, and a receiver drops those whose ID it has seen.
	ID string `json:"id"`
	// Source is the server's monitor prefix.
	Source string `json:"source"`
	// Type is asyncreply.operation.succeeded, asyncreply.operation.failed
	// or asyncreply.operation.canceled.
	Type string `json:"type"`
	// Subject is the operation's ID.
	Subject         string    `json:"subject,omitempty"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype,omitempty"`
	// Data is the operation's status document.
	Data json.RawMessage `json:"data,omitempty"`
}

// VerifyWebhook checks that a webhook request was signed with secret, as
// VerifyWebhookSignature does, and returns the event its body carries.
//
// A receiver in a few lines:
//
//	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
//	ev, err := client.VerifyWebhook(secret, r.Header, body, 0)
//	if err != nil {
//		http.Error(w, "invalid webhook", http.StatusUnauthorized)
//		return
//	}
//	// ev.ID: drop it if seen; ev.Type: how the operation ended.
func VerifyWebhook(secret string, header http.Header, body []byte, tolerance time.Duration) (*CloudEvent, error) {
	return verifyWebhookAt(secret, header, body, tolerance, time.Now())
}

// VerifyWebhookSignature checks that a webhook request was signed with
// secret, per Standard Webhooks (https://www.standardwebhooks.com), whatever
// its body. secret is the endpoint's signing secret as the server was given
// it: whsec_ and the key in base64. header holds the request's webhook-id,
// webhook-timestamp and webhook-signature; the last may list several
// space-separated signatures while the sender rotates secrets, and one
// valid v1 (HMAC-SHA256) signature is enough. Signatures are compared in
// constant time. A timestamp more than tolerance from the receiver's clock
// is refused, so that a captured request cannot be replayed later;
// tolerance defaults to DefaultWebhookTolerance when zero or less.
//
// body must be the request body's bytes exactly as received: the signature
// covers them, not their JSON meaning.
func VerifyWebhookSignature(secret string, header http.Header, body []byte, tolerance time.Duration) error {
	return verifyWebhookSignatureAt(secret, header, body, tolerance, time.Now())
}

// verifyWebhookAt is VerifyWebhook with the receiver's clock reading now.
func verifyWebhookAt(secret string, header http.Header, body []byte, tolerance time.Duration, now time.Time) (*CloudEvent, error) {
	if err := verifyWebhookSignatureAt(secret, header, body, tolerance, now); err != nil {
		return nil, err
	}
	id := header.Get("webhook-id")
	var ev CloudEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return nil, fmt.Errorf("client: webhook %s is signed but its body is not a CloudEvent in JSON: %w", id, err)
	}
	if ev.SpecVersion == "" || ev.ID == "" || ev.Type == "" {
		return nil, fmt.Errorf("client: webhook %s is signed but its body is not a CloudEvent: no specversion, id or type", id)
	}
	return &ev, nil
}

// verifyWebhookSignatureAt is VerifyWebhookSignature with the receiver's
// clock reading now.
func verifyWebhookSignatureAt(secret string, header http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	key, err := webhookKey(secret)
	if err != nil {
		return err
	}
	id := header.Get("webhook-id")
	timestamp := header.Get("webhook-timestamp")
	signatures := header.Get("webhook-signature")
	for _, h := range [...]struct{ name, value string }{
		{"webhook-id", id}, {"webhook-timestamp", timestamp}, {"webhook-signature", signatures},
	} {
		if h.value == "" {
			return fmt.Errorf("%w: no %s header", ErrWebhookSignature, h.name)
		}
	}
	sent, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || strings.TrimLeft(timestamp, "0123456789") != "" {
		return fmt.Errorf("%w: webhook-timestamp %q is not seconds since the epoch", ErrWebhookSignature, timestamp)
	}

	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	want := mac.Sum(nil)
	valid := false
	for _, signature := range strings.Fields(signatures) {
		version, encoded, ok := strings.Cut(signature, ",")
		if !ok || version != "v1" {
			continue // another scheme (v1a, asymmetric), or not a signature
		}
		got, err := base64.StdEncoding.DecodeString(encoded)
		if err == nil && hmac.Equal(got, want) {
			valid = true
			break
		}
	}
	if !valid {
		return fmt.Errorf("%w: no v1 signature of webhook %s matches the secret", ErrWebhookSignature, id)
	}

	if tolerance <= 0 {
		tolerance = DefaultWebhookTolerance
	}
	if age := now.Sub(time.Unix(sent, 0)); age > tolerance || age < -tolerance {
		return fmt.Errorf("%w: webhook %s was signed at %s, %s from now (tolerance %s)",
			ErrWebhookTimestamp, id, time.Unix(sent, 0).UTC().Format(time.RFC3339), age.Round(time.Second), tolerance)
	}
	return nil
}

// webhookKey decodes a whsec_ secret. Its error never shows the secret.
func webhookKey(secret string) ([]byte, error) {
	encoded := strings.TrimPrefix(secret, "whsec_")
	if encoded == "" {
		return nil, errors.New("client: webhook secret is empty")
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		// Some secrets are written without base64's padding.
		key, err = base64.RawStdEncoding.DecodeString(encoded)
	}
	if err != nil {
		return nil, errors.New("client: webhook secret is not whsec_ followed by base64")
	}
	return key, nil
}
