package client_test

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asyncreply/asyncreply/client"
)

// The Standard Webhooks test vector: the libraries' shared secret, message
// ID, timestamp and payload, and the signature they all produce.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorPayload   = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

var vectorTime = time.Unix(vectorTimestamp, 0)

func vectorHeader(signature string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", vectorID)
	h.Set("webhook-timestamp", strconv.Itoa(vectorTimestamp))
	h.Set("webhook-signature", signature)
	return h
}

func TestVerifyWebhookSignatureVector(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		secret    string
		signature string
	}{
		{"vector", vectorSecret, vectorSignature},
		{"secret without its prefix", strings.TrimPrefix(vectorSecret, "whsec_"), vectorSignature},
		{"rotation: the valid signature among others", vectorSecret,
			"v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg== " + vectorSignature + " v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="},
	} {
		err := client.VerifyWebhookSignatureAt(tt.secret, vectorHeader(tt.signature), []byte(vectorPayload), 0, vectorTime)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestVerifyWebhookSignatureRefuses(t *testing.T) {
	t.Parallel()
	without := func(name string) http.Header {
		h := vectorHeader(vectorSignature)
		h.Del(name)
		return h
	}
	for _, tt := range []struct {
		name   string
		secret string
		header http.Header
		body   string
		now    time.Time
		want   error
		says   string
	}{
		{name: "wrong secret", secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte("another secret of 24 bytes")),
			want: client.ErrWebhookSignature, says: "no v1 signature of webhook " + vectorID},
		{name: "tampered body", body: `{"test": 2432232315}`, want: client.ErrWebhookSignature},
		{name: "body re-encoded", body: `{"test":2432232314}`, want: client.ErrWebhookSignature},
		{name: "signature one bit off", header: vectorHeader("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="), want: client.ErrWebhookSignature},
		{name: "partial signature", header: vectorHeader("v1,"), want: client.ErrWebhookSignature},
		{name: "signature of another scheme only", header: vectorHeader("v2," + strings.TrimPrefix(vectorSignature, "v1,")), want: client.ErrWebhookSignature},
		{name: "no webhook-id", header: without("webhook-id"), want: client.ErrWebhookSignature, says: "no webhook-id header"},
		{name: "no webhook-timestamp", header: without("webhook-timestamp"), want: client.ErrWebhookSignature, says: "no webhook-timestamp header"},
		{name: "no webhook-signature", header: without("webhook-signature"), want: client.ErrWebhookSignature, says: "no webhook-signature header"},
		{name: "stale timestamp", now: vectorTime.Add(client.DefaultWebhookTolerance + time.Second),
			want: client.ErrWebhookTimestamp, says: "tolerance 5m0s"},
		{name: "timestamp in the future", now: vectorTime.Add(-client.DefaultWebhookTolerance - time.Second), want: client.ErrWebhookTimestamp},
	} {
		secret := cmp.Or(tt.secret, vectorSecret)
		header := tt.header
		if header == nil {
			header = vectorHeader(vectorSignature)
		}
		now := tt.now
		if now.IsZero() {
			now = vectorTime
		}
		err := client.VerifyWebhookSignatureAt(secret, header, []byte(cmp.Or(tt.body, vectorPayload)), 0, now)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%s: %v, want %v saying %q", tt.name, err, tt.want, tt.says)
		}
	}
}

func TestVerifyWebhookSignatureTolerance(t *testing.T) {
	t.Parallel()
	header, body := vectorHeader(vectorSignature), []byte(vectorPayload)
	if err := client.VerifyWebhookSignatureAt(vectorSecret, header, body, 0, vectorTime.Add(client.DefaultWebhookTolerance)); err != nil {
		t.Errorf("at the tolerance's edge: %v", err)
	}
	if err := client.VerifyWebhookSignatureAt(vectorSecret, header, body, time.Minute, vectorTime.Add(2*time.Minute)); !errors.Is(err, client.ErrWebhookTimestamp) {
		t.Errorf("two minutes late with a tolerance of one = %v", err)
	}
	if err := client.VerifyWebhookSignatureAt(vectorSecret, header, body, time.Hour, vectorTime.Add(30*time.Minute)); err != nil {
		t.Errorf("thirty minutes late with a tolerance of an hour: %v", err)
	}
	// The real clock: the vector is years old.
	if err := client.VerifyWebhookSignature(vectorSecret, header, body, 0); !errors.Is(err, client.ErrWebhookTimestamp) {
		t.Errorf("the vector verified against today's clock = %v, want ErrWebhookTimestamp", err)
	}
}

func TestVerifyWebhookBadSecret(t *testing.T) {
	t.Parallel()
	for _, secret := range []string{"", "whsec_", "whsec_not*base64!"} {
		err := client.VerifyWebhookSignatureAt(secret, vectorHeader(vectorSignature), []byte(vectorPayload), 0, vectorTime)
		if err == nil || errors.Is(err, client.ErrWebhookSignature) || !strings.Contains(err.Error(), "secret") {
			t.Errorf("secret %q: %v, want an error about the secret itself", secret, err)
		}
		if secret != "" && strings.Contains(err.Error(), secret) {
			t.Errorf("secret %q: the error shows it: %v", secret, err)
		}
	}
}

// signWebhook signs body as a Standard Webhooks sender does.
func signWebhook(secret []byte, id string, at time.Time, body string) http.Header {
	timestamp := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(id + "." + timestamp + "." + body))
	h := http.Header{}
	h.Set("Webhook-Id", id)
	h.Set("Webhook-Timestamp", timestamp)
	h.Set("Webhook-Signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return h
}

func TestVerifyWebhookReturnsTheCloudEvent(t *testing.T) {
	t.Parallel()
	key := []byte("a secret of thirty-two bytes....")
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	body := `{"specversion":"1.0","id":"op1.Succeeded","source":"https://api.example.com/operations/","type":"asyncreply.operation.succeeded","subject":"op1","time":"2026-12-01T12:00:00Z","datacontenttype":"application/json","data":{"id":"op1","status":"Succeeded"}}`
	ev, err := client.VerifyWebhook(secret, signWebhook(key, "op1.Succeeded", time.Now(), body), []byte(body), 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev.SpecVersion != "1.0" || ev.ID != "op1.Succeeded" || ev.Type != "asyncreply.operation.succeeded" ||
		ev.Subject != "op1" || ev.Source != "https://api.example.com/operations/" ||
		!ev.Time.Equal(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)) || string(ev.Data) != `{"id":"op1","status":"Succeeded"}` {
		t.Errorf("VerifyWebhook = %+v", ev)
	}

	// Signed, but not a CloudEvent: the Standard Webhooks vector.
	_, err = client.VerifyWebhookAt(vectorSecret, vectorHeader(vectorSignature), []byte(vectorPayload), 0, vectorTime)
	if err == nil || errors.Is(err, client.ErrWebhookSignature) || !strings.Contains(err.Error(), "not a CloudEvent") {
		t.Errorf("VerifyWebhook of a signed non-event = %v", err)
	}
	// Tampered: the signature error, before any parsing.
	_, err = client.VerifyWebhook(secret, signWebhook(key, "op1.Succeeded", time.Now(), body), []byte(strings.Replace(body, "Succeeded", "Failed", 1)), 0)
	if !errors.Is(err, client.ErrWebhookSignature) {
		t.Errorf("VerifyWebhook of a tampered event = %v", err)
	}
}
