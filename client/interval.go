package client

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// pollInterval is the time to leave between the starts of two polls after
// an answer with header h: its Retry-After within MinPollInterval and
// MaxPollInterval, or MinPollInterval without one, plus jitter.
func (t *Transport) pollInterval(h http.Header, now time.Time) time.Duration {
	floor, ceiling := t.minPollInterval(), t.maxPollInterval()
	d := floor
	if retryAfter, ok := parseRetryAfter(h.Get("Retry-After"), now); ok {
		d = max(d, retryAfter)
	}
	d = min(d, ceiling)
	d += time.Duration(rand.Float64() * t.jitter() * float64(d))
	return max(min(d, ceiling), floor)
}

// parseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date
// (RFC 9110, section 10.2.3). A date in the past is no delay.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if seconds, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(seconds) * time.Second, true
	}
	if date, err := http.ParseTime(v); err == nil {
		return max(date.Sub(now), 0), true
	}
	return 0, false
}
