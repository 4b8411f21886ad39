package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every webhook signing secret, as Standard Webhooks
// serializes them: "whsec_" and the key in base64.
const SecretPrefix = "whsec_"

// Bounds of a signing key's length, as Standard Webhooks recommends: from
// 192 to 512 bits.
const (
	minSecretBytes = 24
	maxSecretBytes = 64
)

// ParseSecret decodes a signing secret, "whsec_" followed by the base64
// (standard alphabet, padded or not) of a key of 24 to 64 bytes.
func ParseSecret(s string) ([]byte, error) {
	encoded, ok := strings.CutPrefix(strings.TrimSpace(s), SecretPrefix)
	if !ok {
		return nil, errors.New("notify: a webhook secret must start with " + SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(encoded)
	}
	if err != nil {
		return nil, errors.New("notify: a webhook secret must be " + SecretPrefix + " and base64")
	}
	if len(key) < minSecretBytes || len(key) > maxSecretBytes {
		return nil, fmt.Errorf("notify: a webhook secret's key must be %d to %d bytes, got %d", minSecretBytes, maxSecretBytes, len(key))
	}
	return key, nil
}

// Sign returns the webhook-signature header of a webhook with the given
// webhook-id, webhook-timestamp and body, per Standard Webhooks: for each
// key, "v1," and the base64 HMAC-SHA256 of "id.timestamp.body", separated
// by spaces, so that a receiver moving from one secret to the next
// verifies either.
func Sign(keys [][]byte, id string, timestamp time.Time, body []byte) string {
	var sb strings.Builder
	ts := strconv.FormatInt(timestamp.Unix(), 10)
	for i, key := range keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(body)
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("v1,")
		sb.WriteString(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return sb.String()
}
