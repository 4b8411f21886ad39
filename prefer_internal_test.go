package asyncreply

import (
	"net/http"
	"testing"
	"time"
)

func TestParsePrefer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		headers []string
		want    preferences
	}{
		{nil, preferences{}},
		{[]string{"respond-async"}, preferences{respondAsync: true}},
		{[]string{"respond-async, wait=10"}, preferences{respondAsync: true, wait: 10 * time.Second, hasWait: true}},
		{[]string{"Wait = 5"}, preferences{wait: 5 * time.Second, hasWait: true}},
		{[]string{`wait="7"`}, preferences{wait: 7 * time.Second, hasWait: true}},
		{[]string{"wait=3", "wait=9"}, preferences{wait: 3 * time.Second, hasWait: true}}, // first wins
		{[]string{"wait=-1"}, preferences{}},
		{[]string{"wait=soon"}, preferences{}},
		{[]string{"return=minimal; foo=bar, RESPOND-ASYNC"}, preferences{respondAsync: true}},
		{[]string{"handling=lenient"}, preferences{}},
		{[]string{`respond-async, callback; url="https://h.example/a?x=1,2;y=3"`}, preferences{respondAsync: true, callback: "https://h.example/a?x=1,2;y=3"}},
		{[]string{`callback; URL=https://h.example/a`}, preferences{callback: "https://h.example/a"}},
		{[]string{`callback; url="https://h.example/\"q\""`}, preferences{callback: `https://h.example/"q"`}},
		{[]string{`callback; url="https://first.example/"`, `callback; url="https://second.example/"`}, preferences{callback: "https://first.example/"}}, // first wins
		{[]string{`callback`}, preferences{}},
		{[]string{`callback; url="https://h.example/, wait=5`}, preferences{}}, // an unclosed quote swallows the rest
	} {
		h := http.Header{"Prefer": tc.headers}
		if got := parsePrefer(h); got != tc.want {
			t.Errorf("Prefer %q: got %+v, want %+v", tc.headers, got, tc.want)
		}
	}
}
