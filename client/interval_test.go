package client

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPollInterval(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		transport  Transport
		retryAfter string
		min, max   time.Duration
	}{
		{"no Retry-After: the floor", Transport{}, "", time.Second, 1100 * time.Millisecond},
		{"seconds", Transport{}, "3", 3 * time.Second, 3300 * time.Millisecond},
		{"an HTTP date", Transport{}, now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second, 5500 * time.Millisecond},
		{"a date past", Transport{}, now.Add(-time.Hour).Format(http.TimeFormat), time.Second, 1100 * time.Millisecond},
		{"above the ceiling", Transport{}, "3600", DefaultMaxPollInterval, DefaultMaxPollInterval},
		{"below the floor", Transport{MinPollInterval: 2 * time.Second}, "1", 2 * time.Second, 2200 * time.Millisecond},
		{"malformed", Transport{}, "soon", time.Second, 1100 * time.Millisecond},
		{"no jitter", Transport{Jitter: -1}, "2", 2 * time.Second, 2 * time.Second},
		{"more jitter", Transport{Jitter: 1}, "2", 2 * time.Second, 4 * time.Second},
		{"ceiling below the floor", Transport{MinPollInterval: 5 * time.Second, MaxPollInterval: time.Second}, "60", 5 * time.Second, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.retryAfter != "" {
				h.Set("Retry-After", tc.retryAfter)
			}
			seen := make(map[time.Duration]bool)
			for range 100 {
				d := tc.transport.pollInterval(h, now)
				if d < tc.min || d > tc.max {
					t.Fatalf("pollInterval(Retry-After %q) = %s, want within [%s, %s]", tc.retryAfter, d, tc.min, tc.max)
				}
				seen[d] = true
			}
			if jittered := tc.min != tc.max; jittered && len(seen) < 10 {
				t.Errorf("100 intervals took %d values, want jitter", len(seen))
			}
		})
	}
}

func TestLongPollSeconds(t *testing.T) {
	t.Parallel()
	for longPoll, want := range map[time.Duration]int{0: 20, -1: 0, 5 * time.Second: 5, 1500 * time.Millisecond: 1, 500 * time.Millisecond: 0} {
		if got := (&Transport{LongPoll: longPoll}).longPollSeconds(); got != want {
			t.Errorf("LongPoll %s: Prefer: wait=%d, want %d", longPoll, got, want)
		}
	}
}

func TestReadEvents(t *testing.T) {
	t.Parallel()
	stream := "retry: 1000\n\n: keep-alive\n\nevent: status\nid: 1\ndata: {\"a\":\ndata: 1}\n\ndata:second\r\n\r\ndata: third\n\n"
	var got []string
	readEvents(strings.NewReader(stream), func(data string) bool {
		got = append(got, data)
		return len(got) < 2
	})
	if want := []string{"{\"a\":\n1}", "second"}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("events %q, want %q, then stop", got, want)
	}
}
